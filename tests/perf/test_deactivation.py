"""Bulk deactivation: killed half way and resumed, locked rows skipped, time budget handed over."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from tasks import users as user_tasks
from tasks.users import deactivate_dormant_users
from tests.livecelery import ROOT, LiveStack, wait_until
from worker import db
from worker.config import get_settings
from worker.models import User


def add_users(engine: Engine, dormant: int, recent: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, last_seen_at) "
                "SELECT 'u' || g || '@example.test', 'U' || g, 'x', now() - "
                "  CASE WHEN g % :every = 0 THEN interval '3 days' ELSE interval '400 days' END "
                "FROM generate_series(1, :n) g"
            ),
            {"n": dormant + recent, "every": (dormant + recent) // recent},
        )


def deactivated(engine: Engine) -> dict[int, datetime]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(User.id, User.deactivated_at).where(User.is_active.is_(False))
        ).all()
    return {row.id: row.deactivated_at for row in rows}


def active_recent_users(engine: Engine) -> int:
    query = text(
        "SELECT count(*) FROM users WHERE is_active AND last_seen_at > now() - interval '1 year'"
    )
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


@pytest.mark.integration
def test_dormant_run_killed_half_way_is_finished_by_the_next_run(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path
) -> None:
    # Given 1000 dormant and 200 recently seen users, deactivated 100 per batch
    add_users(live_db, dormant=1000, recent=200)
    env = {**live_stack.env, "DEACTIVATE_BATCH_SIZE": "100"}
    command = [sys.executable, "-m", "tests.perf.crashing_run", "deactivate"]
    marker = tmp_path / "parked"

    # When a run is SIGKILLed after two committed batches
    run = subprocess.Popen([*command, "after_batch_2", str(marker)], cwd=ROOT, env=env)
    try:
        wait_until(lambda: marker.exists() or run.poll() is not None, 60, what="two batches")
        assert run.poll() is None, f"the run exited with {run.returncode}"
    finally:
        run.kill()
        run.wait(30)
    first = deactivated(live_db)
    assert len(first) == 200

    # Then the next run deactivates exactly the rest, and leaves the first 200 as they were
    rerun = subprocess.run(
        [*command, "none", str(marker)], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr.decode(errors="replace")
    assert b"deactivated 800 users" in rerun.stdout
    after = deactivated(live_db)
    assert len(after) == 1000
    assert {user: after[user] for user in first} == first
    assert active_recent_users(live_db) == 200


@pytest.fixture
def installed_engine(committed_db_url: URL) -> Iterator[Engine]:
    """The live test database as this process's engine, for calling the task in-process."""
    engine = create_engine(committed_db_url, connect_args={"options": "-c statement_timeout=20000"})
    with db.engine_installed(engine):
        yield engine
    engine.dispose()


@pytest.mark.integration
def test_dormant_run_skips_rows_locked_by_others_and_a_later_run_takes_them(
    installed_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 300 dormant users, five of them locked by another transaction
    add_users(installed_engine, dormant=300, recent=10)
    with installed_engine.connect() as other:
        locked = other.scalars(
            text(
                "SELECT id FROM users WHERE last_seen_at < now() - interval '1 year' "
                "ORDER BY id LIMIT 5 FOR UPDATE"
            )
        ).all()

        # When a run goes while the lock is held
        with caplog.at_level(logging.INFO, logger="tasks.users"):
            assert deactivate_dormant_users(inactive_days=365) == 295

        # Then it neither waited for nor touched the locked users, and logged its progress
        assert set(deactivated(installed_engine)).isdisjoint(locked)
        assert "deactivating 300 dormant users" in caplog.text
        assert "deactivated 295/300 dormant users (" in caplog.text
        other.rollback()

    # And a later run takes them
    assert deactivate_dormant_users(inactive_days=365) == 5
    assert set(locked) <= set(deactivated(installed_engine))
    assert active_recent_users(installed_engine) == 10


def test_a_run_out_of_time_budget_hands_the_rest_to_a_new_task(
    eager_tasks: Celery,
    db_session: Session,
    make_user: Callable[..., User],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given 7 dormant users, batches of 2, and a time budget that is used up after one batch
    long_ago = datetime.now(UTC) - timedelta(days=800)
    dormant = {make_user(last_seen_at=long_ago).id for _ in range(7)}
    small_batches = get_settings().model_copy(update={"deactivate_batch_size": 2})
    monkeypatch.setattr(user_tasks, "get_settings", lambda: small_batches)
    monkeypatch.setattr(user_tasks, "_TIME_BUDGET_FRACTION", 0.0)

    # When the task runs
    with caplog.at_level(logging.INFO, logger="tasks.users"):
        first_part = deactivate_dormant_users.delay(inactive_days=365).get()

    # Then it did one batch and queued a continuation, and the continuations did the rest
    assert first_part == 2
    assert caplog.text.count("a new task takes the rest") == 4
    inactive = set(db_session.scalars(select(User.id).where(User.is_active.is_(False))))
    assert inactive == dormant
