"""Housekeeping tasks run by beat."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

from tasks.base import DatabaseTask
from worker import ledger
from worker.config import get_settings
from worker.contracts import PRUNE_PROCESSED_TASKS
from worker.db import session_scope

log = logging.getLogger(__name__)


@shared_task(name=PRUNE_PROCESSED_TASKS, base=DatabaseTask, bind=True)
def prune_processed_tasks(self: DatabaseTask) -> int:
    """Forget processed task ids older than PROCESSED_TASK_RETENTION_DAYS."""
    retention = timedelta(days=get_settings().processed_task_retention_days)
    with session_scope() as session:
        removed = ledger.prune_processed(session, retention)
    log.info("pruned %d processed task ids older than %s", removed, retention)
    return removed
