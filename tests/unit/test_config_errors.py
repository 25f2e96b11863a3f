"""A bad setting stops every entry point with one line per variable: name, masked value, form."""

from __future__ import annotations

import os
import subprocess

import pytest

from worker.config import ConfigError, load_settings
from worker.development.processes import run_python

CANARY = "canary-s3cret-pw"
REDIS_LINE = (
    "invalid setting REDIS_URL='http://:***@cache:6379/0': expected "
    "redis://[:PASSWORD@]HOST:PORT/DB (or rediss://..., unix:///PATH)"
)
POOL_LINE = "invalid setting DB_POOL_SIZE='0': expected an integer >= 1"
DATABASE_LINE = (
    "invalid setting DATABASE_URL='postgresql+psycopg2://app:***@db:notaport/app': "
    "expected postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE"
)


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run_python({**os.environ, **env}, *args)


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert CANARY not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return (result.stdout + result.stderr).splitlines()


def test_worker_start_reports_every_bad_setting_in_one_line_each() -> None:
    result = run(
        ["-m", "celery", "-A", "worker.app", "worker", "-P", "solo"],
        REDIS_URL=f"http://:{CANARY}@cache:6379/0",
        DB_POOL_SIZE="0",
    )
    assert result.returncode != 0
    assert output_lines(result) == [REDIS_LINE, POOL_LINE]


def test_migrate_reports_a_malformed_database_url_in_one_line() -> None:
    result = run(
        ["-m", "alembic", "upgrade", "head"],
        DATABASE_URL=f"postgresql+psycopg2://app:{CANARY}@db:notaport/app",
    )
    assert result.returncode != 0
    assert output_lines(result) == [DATABASE_LINE]


def test_operator_commands_report_every_bad_setting() -> None:
    result = run(
        ["-m", "worker", "settings"],
        DATABASE_URL=f"postgresql+psycopg2://app:{CANARY}@db:notaport/app",
        REDIS_URL=f"http://:{CANARY}@cache:6379/0",
    )
    assert result.returncode != 0
    assert output_lines(result) == [f"Error: {DATABASE_LINE}", REDIS_LINE]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"TASK_SOFT_TIME_LIMIT": "90", "TASK_TIME_LIMIT": "60"},
            "invalid settings TASK_SOFT_TIME_LIMIT=90 with TASK_TIME_LIMIT=60: expected "
            "TASK_SOFT_TIME_LIMIT lower than TASK_TIME_LIMIT",
        ),
        (
            {"WORKER_CHILDREN_PER_CPU": "lots"},
            "invalid setting WORKER_CHILDREN_PER_CPU='lots': expected an integer from 1 to 64",
        ),
        (
            {"WORKER_CONCURRENCY": "0"},
            "invalid setting WORKER_CONCURRENCY='0': expected an integer >= 1 (or unset)",
        ),
        (
            {"DB_POOL_PRE_PING": "maybe"},
            "invalid setting DB_POOL_PRE_PING='maybe': expected true or false",
        ),
        (
            {"DATABASE_URL": f"app:{CANARY}@db/app"},  # no scheme: nothing to keep visible
            "invalid setting DATABASE_URL='***': expected "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE",
        ),
    ],
)
def test_each_line_names_the_variable_its_value_and_the_expected_form(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as failure:
        load_settings()
    assert str(failure.value) == line
