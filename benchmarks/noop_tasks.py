"""A task that does nothing: the floor of per-task cost, loaded only into benchmark workers.

Workers import it through EXTRA_TASK_MODULES=benchmarks.noop_tasks; production never does.
"""

from __future__ import annotations

from celery import shared_task

NOOP: str = "benchmarks.noop"


@shared_task(name=NOOP)
def noop(post_id: int) -> None:
    """Take the same argument as record_view and do nothing with it."""
