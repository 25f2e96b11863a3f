"""Fixtures shared by the whole suite; the database fixtures come from the `worker` pytest plugin.

The folder says what a test needs: `unit/` nothing, `database/` PostgreSQL and/or Redis,
`live/` a real `celery worker` (marker `integration`), `faults/` throwaway servers or processes
it breaks (marker `faults`, run one at a time). The markers follow from the folder.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kombu.transport import virtual as kombu_virtual
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from worker import db
from worker.config import Settings, get_settings, mask_url
from worker.development.databases import as_runtime_role, disposing, unpooled
from worker.development.live import LiveStack, forget_queue, stack_env
from worker.development.plugin import unavailable
from worker.models import Post, User

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"live": "integration", "faults": "faults"}
THROWAWAY_SERVERS = {"pg", "broker"}  # the fault fixtures (tests/faults/conftest.py)
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))
_ids = itertools.count(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    serial = config.pluginmanager.hasplugin("xdist")
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
        if folder == "faults" and serial:
            # With `-n N --dist loadgroup`, fault tests run one after another on one xdist worker
            # beside the other tests: those on throwaway servers in one line, those that kill
            # processes on the shared servers in another, so no two of a kind ever overlap.
            servers = THROWAWAY_SERVERS & set(getattr(item, "fixturenames", ()))
            item.add_marker(pytest.mark.xdist_group("faults-servers" if servers else "faults"))


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record this test's one line of figures for the end-of-session summary."""

    def record(line: str) -> None:
        request.node.user_properties.append(("figure", line))
        print(line)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Read from the reports, so that figures of tests run by xdist workers reach this summary.
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])]
    lines = [value for r in reports for name, value in r.user_properties if name == "figure"]
    if lines:
        terminalreporter.section("figures")
        for line in sorted(lines):
            terminalreporter.write_line(line)


@pytest.fixture
def make_user(db_session: Session) -> Callable[..., User]:
    def make(**fields: object) -> User:
        n = next(_ids)
        user = User(
            email=str(fields.pop("email", f"user{n}@example.test")),
            name=str(fields.pop("name", f"User {n}")),
            password_hash="not-a-real-hash",
            **fields,
        )
        db_session.add(user)
        db_session.flush()
        return user

    return make


@pytest.fixture
def make_post(db_session: Session, make_user: Callable[..., User]) -> Callable[..., Post]:
    def make(**fields: object) -> Post:
        n = next(_ids)
        author = fields.pop("author", None) or make_user()
        post = Post(
            title=str(fields.pop("title", f"Post {n}")),
            body="body",
            slug=str(fields.pop("slug", f"post-{n}")),
            author_id=author.id,  # type: ignore[attr-defined]
            **fields,
        )
        db_session.add(post)
        db_session.flush()
        return post

    return make


# The queues the running test made on the test Redis database, whoever declared them.
_queues_of_this_test: set[str] = set()


def live_env(database_url: URL | str, redis_url: str, **extra: str) -> dict[str, str]:
    """`stack_env` of a test: its queue goes from the test Redis database when the test ends."""
    env = stack_env(database_url, redis_url, **extra)
    _queues_of_this_test.add(env["TASK_QUEUE"])
    return env


@pytest.fixture
def live_redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The configured Redis server, on the test database index (TEST_REDIS_DB, default 15).

    Tests share it safely because each uses a queue of its own (see `live_env`); at the end
    the queues the test declared, and kombu's `_kombu.binding*` entries for them, are removed.
    """
    url = urlunsplit(urlsplit(get_settings().redis_url.get_secret_value())._replace(path=""))
    url = f"{url}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as error:
        unavailable(f"Redis is not reachable at {mask_url(url)}: {error}")
    finally:
        client.close()
    _queues_of_this_test.clear()
    declare = kombu_virtual.Channel.queue_bind

    def queue_bind(channel: kombu_virtual.Channel, queue: str, *args: Any, **kwargs: Any) -> Any:
        _queues_of_this_test.add(queue)  # producers in this process; workers use live_env's
        return declare(channel, queue, *args, **kwargs)

    monkeypatch.setattr(kombu_virtual.Channel, "queue_bind", queue_bind)
    try:
        yield url
    finally:
        for queue in _queues_of_this_test:
            forget_queue(url, queue)
        _queues_of_this_test.clear()


@pytest.fixture
def live_stack(committed_db_url: URL, live_redis_url: str, tmp_path: Path) -> Iterator[LiveStack]:
    """Real workers against a fresh database and a queue of the test's own.

    The workers log in as the runtime role (only the privileges the tasks need); `live_db`
    and test setup use the owner. They are killed afterwards: the outcome has been checked.
    """
    stack = LiveStack(live_env(as_runtime_role(committed_db_url), live_redis_url), tmp_path)
    try:
        yield stack
    finally:
        stack.kill()


@pytest.fixture
def live_db(committed_db_url: URL) -> Iterator[Engine]:
    """An engine on the live test database, for Given steps and Then assertions."""
    with unpooled(committed_db_url) as engine:
        yield engine


@pytest.fixture
def worker_engine(committed_db_url: URL) -> Iterator[Engine]:
    """The worker's engine, as a pool child builds it, with one pooled connection."""
    settings = Settings(
        database_url=SecretStr(committed_db_url.render_as_string(hide_password=False)),
        db_pool_size=1,
        db_max_overflow=0,
    )
    with disposing(db.build_engine(settings, os.getpid())) as engine, db.engine_installed(engine):
        yield engine
