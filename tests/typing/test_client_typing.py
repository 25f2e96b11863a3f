"""mypy accepts correct client calls and rejects wrong ones, with messages naming the problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Our own cache: the checkout's .mypy_cache may be in use by `make lint` at the same time.
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(snippet: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--no-pretty",
            "--cache-dir",
            str(cache_dir),
            str(HERE / snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_mypy_accepts_correct_calls(cache_dir: Path) -> None:
    result = mypy("good_calls.py", cache_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_mypy_rejects_wrong_calls_naming_each_problem(cache_dir: Path) -> None:
    result = mypy("bad_calls.py", cache_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    errors: dict[int, str] = {}
    for line in result.stdout.splitlines():
        found = re.match(r".*bad_calls\.py:(\d+): error: (.*)", line)
        if found:
            errors[int(found[1])] = errors.get(int(found[1]), "") + found[2]
    expected = {
        13: r'Argument 1 to "record_view" of "TaskCalls" has incompatible type "str"; '
        r'expected "int"',
        14: r'Missing positional argument "user_id" in call to "deactivate_user"',
        15: r'Unexpected keyword argument "priority" for "record_view"',
        16: r'Argument "countdown" to "record_view" of "TaskCalls" has incompatible type "str"',
        17: r'Unexpected keyword argument "days" for "deactivate_dormant_users"',
        18: r'Argument 1 to "deactivate_user" of "TaskCalls" has incompatible type "None"',
        19: r'Too many positional arguments for "record_view"',
        20: r'Incompatible return value type \(got "str", expected "int"\)',
    }
    assert sorted(errors) == sorted(expected), result.stdout
    for line, pattern in expected.items():
        assert re.search(pattern, errors[line]), f"line {line}: {errors[line]}"
