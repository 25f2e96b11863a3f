"""Bulk deactivation: locked rows skipped and taken later, the time budget handed over.

A run killed half way is a fault test (tests/faults/test_killed_runs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from tasks import users as user_tasks
from tasks.users import deactivate_dormant_users
from tests.steps import add_dormant_users, deactivated, scalar
from worker import db
from worker.config import get_settings
from worker.models import User


@pytest.fixture
def installed_engine(committed_db_url: URL) -> Iterator[Engine]:
    """The live test database as this process's engine, for calling the task in-process."""
    engine = create_engine(committed_db_url, connect_args={"options": "-c statement_timeout=20000"})
    with db.engine_installed(engine):
        yield engine
    engine.dispose()


def test_dormant_run_skips_rows_locked_by_others_and_a_later_run_takes_them(
    installed_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 300 dormant users, five of them locked by another transaction
    add_dormant_users(installed_engine, dormant=300, recent=10)
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
    assert scalar(installed_engine, "SELECT count(*) FROM users WHERE is_active") == 10


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
