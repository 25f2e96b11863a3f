"""Housekeeping tasks run by beat."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from worker import ledger
from worker.config import get_settings
from worker.contracts import PRUNE_PROCESSED_TASKS, RECORD_REFUSAL, SAMPLE_METRICS
from worker.db import session_scope
from worker.operations import backlog
from worker.producer import viewbuffer
from worker.runtime.task import DatabaseTask

log = logging.getLogger(__name__)


@shared_task(name=PRUNE_PROCESSED_TASKS, base=DatabaseTask, bind=True)
def prune_processed_tasks(self: DatabaseTask) -> int:
    """Forget processed task ids older than PROCESSED_TASK_RETENTION_DAYS."""
    retention = timedelta(days=get_settings().processed_task_retention_days)
    with session_scope() as session:
        removed = ledger.prune_processed(session, retention)
    log.info("pruned %d processed task ids older than %s", removed, retention)
    return removed


@shared_task(name=RECORD_REFUSAL, base=DatabaseTask, bind=True)
def record_refusal(
    self: DatabaseTask,
    task_id: str,
    task_name: str,
    error_class: str,
    reason: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    arguments_kept: bool = True,
) -> None:
    """Dead-letter a message the main process refused, with its arguments where it had some."""

    def dead_letter(session: Session) -> None:
        ledger.record_failure(
            session,
            task_id=task_id,
            task_name=task_name,
            args=(args or []) if arguments_kept else None,
            kwargs=(kwargs or {}) if arguments_kept else None,
            error=reason,
            error_class=error_class,
        )

    # The main process already logged the refusal at WARNING: one line per failure.
    self.apply_once(dead_letter)
    log.info("%s[%s] dead letter recorded (%s)", task_name, task_id, error_class)


@shared_task(name=SAMPLE_METRICS, base=DatabaseTask, bind=True)
def sample_metrics(self: DatabaseTask) -> None:
    """Store the backlog gauges the main process cannot read itself (`worker.operations.backlog`).

    A figure that cannot be read is left out (its gauge goes missing), with a WARNING: a
    monitoring task never dead-letters.
    """
    queue = get_settings().task_queue
    sample: dict[str, Any] = {"sampled_at": time.time()}
    try:
        with session_scope() as session:
            dead, pending, oldest = backlog.database_counts(session)
        sample.update(dead_letters=dead, outbox_pending=pending, outbox_oldest_age_seconds=oldest)
    except SQLAlchemyError as error:
        log.warning("metrics: could not count dead letters and outbox rows: %s", error)
    redis = viewbuffer.get_redis()
    try:
        sample["view_buffer_pending_views"] = backlog.pending_views(redis, queue)
        backlog.store(redis, queue, backlog.Backlog(**sample))
    except RedisError as error:
        log.warning("metrics: could not sample the view buffer or keep the sample: %s", error)
