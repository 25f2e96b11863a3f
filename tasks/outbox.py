"""The outbox relay task that beat runs every few seconds."""

from __future__ import annotations

import logging

from celery import shared_task

from worker.config import get_settings
from worker.contracts import OUTBOX_RELAY
from worker.operations import relay
from worker.producer.client import TaskClient
from worker.runtime.task import DatabaseTask

log = logging.getLogger(__name__)


@shared_task(name=OUTBOX_RELAY, base=DatabaseTask, bind=True)
def relay_outbox(self: DatabaseTask) -> int:
    """Publish pending outbox rows in order; returns how many were published.

    Two runs at once each take different rows (SKIP LOCKED). The run stops well inside the soft
    time limit; beat starts the next one.
    """
    budget = get_settings().task_soft_time_limit / 2
    report = relay.relay(TaskClient(self.app), max_seconds=budget)
    if report.error is not None:
        log.warning("outbox rows stay pending until the broker is back: %s", report.error)
    return report.sent
