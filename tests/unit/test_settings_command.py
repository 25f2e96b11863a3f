"""`python -m worker settings` shows the values the worker applies, not the unset ones."""

from __future__ import annotations

import os

from worker.development.processes import run_cli


def settings_shown(**env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "WORKER_CONCURRENCY"} | env
    result = run_cli(environment, "settings", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = (line.split("  #", 1)[0] for line in result.stdout.splitlines())
    return dict(line.split("=", 1) for line in lines)


def test_worker_concurrency_shows_the_pool_size_the_worker_starts() -> None:
    cpus = os.cpu_count() or 1
    assert settings_shown(WORKER_CHILDREN_PER_CPU="5")["WORKER_CONCURRENCY"] == str(5 * cpus)
    assert settings_shown(WORKER_CONCURRENCY="7")["WORKER_CONCURRENCY"] == "7"


def test_urls_are_shown_with_their_passwords_masked() -> None:
    shown = settings_shown(
        DATABASE_URL="postgresql+psycopg2://app:hunter2@db.example:5432/app",
        REDIS_URL="redis://:hunter2@cache.example:6379/2",
    )
    assert shown["DATABASE_URL"] == "postgresql+psycopg2://app:***@db.example:5432/app"
    assert shown["REDIS_URL"] == "redis://:***@cache.example:6379/2"
