"""The exactly-once ledger: pruning keeps fresh task ids and forgets old ones."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from worker import ledger
from worker.config import get_settings
from worker.contracts import PRUNE_PROCESSED_TASKS
from worker.models import ProcessedTask


def add_processed(session: Session, task_id: str, age: timedelta) -> None:
    session.execute(
        insert(ProcessedTask).values(
            task_id=task_id, task_name="tasks.posts.record_view", finished_at=func.now() - age
        )
    )


def test_prune_forgets_ids_older_than_the_retention_and_keeps_fresh_ones(
    eager_tasks: Celery, db_session: Session
) -> None:
    # Given ids applied just now, just inside the retention, and beyond it
    retention = timedelta(days=get_settings().processed_task_retention_days)
    add_processed(db_session, "fresh", timedelta(0))
    add_processed(db_session, "inside", retention - timedelta(hours=1))
    add_processed(db_session, "old", retention + timedelta(hours=1))
    add_processed(db_session, "ancient", timedelta(days=400))

    # When the beat task runs
    removed = eager_tasks.tasks[PRUNE_PROCESSED_TASKS].delay().get()

    # Then only the old ones are gone
    assert removed == 2
    assert set(db_session.scalars(select(ProcessedTask.task_id))) == {"fresh", "inside"}


def test_retention_is_configurable(db_session: Session) -> None:
    add_processed(db_session, "two-days", timedelta(days=2))
    add_processed(db_session, "today", timedelta(hours=1))
    assert ledger.prune_processed(db_session, timedelta(days=1)) == 1
    assert set(db_session.scalars(select(ProcessedTask.task_id))) == {"today"}
