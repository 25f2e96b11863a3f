"""Tasks that kill their own pool process, for tests only: load them with `celery worker -I`.

    stack.start_worker(extra_args=["-I", CRASHERS_MODULE])

They are `DatabaseTask`s, so the delivery cap (MAX_DELIVERIES) applies to them exactly as to the
real tasks. `exit_once` dies on its first delivery (leaving a marker file behind), then counts a
view: a message that crashes once is redelivered and applied exactly once.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from celery import shared_task

from worker.domain import posts
from worker.runtime.task import DatabaseTask

CRASHERS_MODULE = "tests.faults.crashers"
EXIT = "tests.crash.exit"
SEGFAULT = "tests.crash.segfault"
EXIT_ONCE = "tests.crash.exit_once"


class CrashingTask(DatabaseTask):
    """No contract in `worker.contracts`: keyword arguments are passed through as sent."""

    abstract = True

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(kwargs)


@shared_task(name=EXIT, base=CrashingTask, bind=True)
def crash_exit(self: CrashingTask) -> None:
    """Leave the pool process at once, like an OOM kill would (no cleanup, no ack)."""
    os._exit(1)


@shared_task(name=SEGFAULT, base=CrashingTask, bind=True)
def crash_segfault(self: CrashingTask) -> None:
    """Read address 0: a real segmentation fault in the pool process."""
    ctypes.string_at(0)


@shared_task(name=EXIT_ONCE, base=CrashingTask, bind=True)
def exit_once(self: CrashingTask, post_id: int, marker: str) -> int | None:
    """Die on the first delivery, creating `marker`; count a view of `post_id` on the next."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return self.apply_once(lambda session: posts.record_view(session, post_id))
