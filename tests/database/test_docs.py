"""The README and docs pages cannot rot: their code blocks run, their commands exist, links resolve.

Python blocks run for real in a subprocess, against a throwaway migrated database and the test
Redis database with a queue of their own; a block that defines tests runs under pytest with the
plugin. Shell lines are checked by what they name: `python -m ...`, `celery` and `alembic` lines
with `--help` of that exact command, `make` lines against the Makefile, `pip` lines against
`pyproject.toml`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from packaging.requirements import Requirement
from sqlalchemy.engine import URL

from tests.database.docs_blocks import (
    README,
    Block,
    Command,
    anchors,
    blocks,
    commands,
    doc_pages,
    links,
    settings_table,
    where,
)
from worker.config import Settings, get_settings
from worker.contracts import InvalidTaskArguments, validate_arguments
from worker.development.live import PROJECT_ROOT
from worker.runtime import envelope

pytest_plugins = ["pytester"]

CHECKED = {"python", "sh", "console"}
BLOCKS = [block for page in doc_pages() for block in blocks(page)]
PYTHON_BLOCKS = [block for block in BLOCKS if block.lang == "python"]
COMMANDS = [cmd for block in BLOCKS if block.lang in {"sh", "console"} for cmd in commands(block)]
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
# Variables a doc may set that are no setting: the suite's own, and CI's.
OTHER_VARIABLES = {"TEST_REDIS_DB", "CI"}
SETTING_VARIABLES = {name.upper() for name in Settings.model_fields}


def test_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= 150, f"README.md has {lines} lines; move depth to docs/"


def test_configuration_table_lists_every_setting_with_its_default() -> None:
    rows = settings_table()
    listed = [name for names, _, _ in rows for name in names]

    missing, unknown = SETTING_VARIABLES - set(listed), set(listed) - SETTING_VARIABLES
    assert not missing, f"README.md's configuration table lacks {sorted(missing)}"
    assert not unknown, f"README.md's configuration table lists no setting {sorted(unknown)}"
    assert len(listed) == len(set(listed)), "README.md lists a variable twice"
    for names, cell, line in rows:
        shown = re.findall(r"`([^`]*)`", cell)
        if not shown:  # prose, such as "3 per CPU": no literal to compare
            continue
        assert len(shown) == len(names), f"README.md:{line}: one default per variable"
        for name, text in zip(names, shown, strict=True):
            default = _default(name)
            assert text == default, f"README.md:{line}: {name} defaults to {default!r}"


def _default(variable: str) -> str:
    value = Settings.model_fields[variable.lower()].default
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_block_is_one_this_test_checks() -> None:
    unchecked = [f"{block.id} ```{block.lang}" for block in BLOCKS if block.lang not in CHECKED]
    assert not unchecked, f"use one of {sorted(CHECKED)}: a block nothing runs can rot"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    assert set(doc_pages()) - {README} <= linked


@pytest.mark.parametrize("page", doc_pages(), ids=lambda page: str(page.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{where(page, line)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where(page, line)}: {target} (no such heading)")
    assert not broken


# Python blocks ----------------------------------------------------------------------------------


@pytest.fixture
def docs_queue(live_redis_url: str) -> Iterator[str]:
    """A queue of the block's own on the test Redis database; its keys are deleted after."""
    queue = f"docs-{uuid.uuid4().hex[:8]}"
    yield queue
    client = redis.Redis.from_url(live_redis_url)
    try:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.id)
def test_python_block_runs(
    block: Block,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    worker_committed_db_url: URL,
    live_redis_url: str,
    docs_queue: str,
) -> None:
    tests = len(re.findall(r"^def test_", block.code, flags=re.MULTILINE))
    if tests:
        # A test module, run the way an API team runs theirs: pytest with the plugin.
        monkeypatch.setenv("CI", "1")  # a fixture that cannot reach its service fails
        pytester.makepyfile(test_from_docs=block.code)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        assert result.ret == 0, f"{block.id}: its tests failed"
        result.assert_outcomes(passed=tests)
        return

    script = tmp_path / "block.py"
    script.write_text(block.code)
    env = {
        **os.environ,
        "DATABASE_URL": worker_committed_db_url.render_as_string(hide_password=False),
        "REDIS_URL": live_redis_url,
        "TASK_QUEUE": docs_queue,
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # away from the checkout's .env, if any
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"

    published = _published(live_redis_url, docs_queue)
    if re.search(r"\bsend_task\(|\btasks\.\w+\(|\bafter_commit\(", block.code):
        assert published, f"{block.id} says it publishes, but nothing reached the queue"
    for message in published:
        _assert_worker_would_run(block, message)


def _published(redis_url: str, queue: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.lrange(queue, 0, -1))
    finally:
        client.close()


def _assert_worker_would_run(block: Block, raw: bytes) -> None:
    """The worker's own gate accepts the message, and its arguments fit the task's contract."""
    settings = get_settings()
    limits = envelope.Limits(
        max_bytes=settings.max_message_bytes, max_delay_seconds=settings.max_task_delay_seconds
    )
    verdict = envelope.inspect(raw, limits)
    assert isinstance(verdict, envelope.Accepted), f"{block.id}: the worker refuses {verdict}"
    payload: dict[str, Any] = verdict.payload
    args, kwargs, _ = json.loads(base64.b64decode(payload["body"]))
    try:
        validate_arguments(payload["headers"]["task"], args, kwargs)
    except InvalidTaskArguments as error:
        pytest.fail(f"{block.id}: the worker dead-letters what it sends: {error}")


# Shell lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.id)
def test_shell_line_names_what_exists(command: Command) -> None:
    _check_assignments(command)
    program, *args = command.argv
    name = Path(program).name
    if name in {"python", "python3"}:
        _check_help(command, [sys.executable, *args])
    elif name in {"celery", "alembic"}:
        _check_help(command, [str(BIN / name), *args])
    elif program == "make":
        _check_make(command, args)
    elif program == "pip":
        _check_pip(command, args)
    elif program == "export":
        for assignment in args:
            variable = assignment.partition("=")[0]
            assert variable in SETTING_VARIABLES | OTHER_VARIABLES, f"{command.id}: {variable}"
    elif program in {"cd", ".", "source"}:
        _check_path(command, args[0], made_by_make=program != "cd")
    elif program == "set":
        assert args in (["-a"], ["+a"]), command.id
    else:
        pytest.fail(f"{command.id}: teach tests/database/test_docs.py how to check {program!r}")


def _check_assignments(command: Command) -> None:
    for variable, _ in command.assignments:
        # A setting, or a variable the command itself is told to read (--password-env VAR).
        assert variable in SETTING_VARIABLES | OTHER_VARIABLES or variable in command.argv, (
            f"{command.id}: {variable} is neither a setting nor read by the command"
        )


def _check_help(command: Command, argv: list[str]) -> None:
    """`<the exact command line> --help` exits 0: every subcommand and option in it exists."""
    for arg in argv[2:]:
        if "/" in arg and not arg.startswith("-") and "://" not in arg:
            _check_path(command, arg)
    done = subprocess.run(
        [*argv, "--help"],
        cwd=command.cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{command.id}:\n{done.stdout}\n{done.stderr}"


def _check_path(command: Command, path: str, made_by_make: bool = False) -> None:
    target = command.cwd / path
    if made_by_make and not target.exists():
        # .local/services.env and the like: written by a Makefile target, so named there.
        assert Path(path).name in (PROJECT_ROOT / "Makefile").read_text(), f"{command.id}: {path}"
        return
    assert target.exists(), f"{command.id}: {path} does not exist"


def _make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", makefile, flags=re.MULTILINE))


def _check_make(command: Command, args: list[str]) -> None:
    targets = [arg for arg in args if "=" not in arg and not arg.startswith("-")]
    assert targets, f"{command.id}: name the target"
    assert set(targets) <= _make_targets(), f"{command.id}: not a Makefile target"


def _check_pip(command: Command, args: list[str]) -> None:
    assert args[:1] == ["install"], command.id
    extras = set(PYPROJECT["optional-dependencies"])
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        if arg.startswith(".") or arg.startswith("/"):  # a checkout: `.[api]`
            path, _, wanted = arg.partition("[")
            assert (command.cwd / path / "pyproject.toml").is_file(), command.id
            assert set(wanted.rstrip("]").split(",")) <= extras, f"{command.id}: {arg}"
            continue
        requirement = Requirement(arg)
        assert requirement.name == PYPROJECT["name"], f"{command.id}: {requirement.name}"
        assert requirement.extras <= extras, f"{command.id}: {requirement.extras - extras}"
        assert requirement.url is None or requirement.url.startswith("git+"), command.id
