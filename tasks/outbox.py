"""The outbox relay task that beat runs every few seconds."""

from __future__ import annotations

from celery import shared_task

from worker.config import get_settings
from worker.contracts import OUTBOX_RELAY
from worker.operations import relay
from worker.producer.client import TaskClient
from worker.runtime.task import DatabaseTask


@shared_task(name=OUTBOX_RELAY, base=DatabaseTask, bind=True)
def relay_outbox(self: DatabaseTask) -> int:
    """Publish pending outbox rows in order; returns how many were published.

    Two runs at once each take different rows (SKIP LOCKED). The run stops well inside the soft
    time limit; beat starts the next one.
    """
    budget = get_settings().task_soft_time_limit / 2
    # relay() logs what it did, and a broker failure, itself; an idle run logs nothing.
    return relay.relay(TaskClient(self.app), max_seconds=budget).sent
