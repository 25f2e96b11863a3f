"""Housekeeping tasks run by beat."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session

from worker import ledger
from worker.config import get_settings
from worker.contracts import PRUNE_PROCESSED_TASKS, RECORD_REFUSAL
from worker.db import session_scope
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
