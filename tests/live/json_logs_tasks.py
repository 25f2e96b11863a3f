"""What the JSON-log tests load into their workers (`-I`): a retry, a give-up, a child to kill.

    stack.start_worker(extra_args=["-I", JSON_LOGS_TASKS])

They are `DatabaseTask`s, so retries, dead letters and the delivery cap apply as to real tasks.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

from worker.runtime.task import DatabaseTask

JSON_LOGS_TASKS = "tests.live.json_logs_tasks"
FLAKY = "tests.json_logs.flaky"
ALWAYS_TRANSIENT = "tests.json_logs.always_transient"
HOLD = "tests.json_logs.hold"

log = logging.getLogger(__name__)


class ScenarioTask(DatabaseTask):
    """No contract in `worker.contracts`: keyword arguments are passed through as sent."""

    abstract = True

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(kwargs)


def _lost_connection() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


@shared_task(name=FLAKY, base=ScenarioTask, bind=True)
def flaky(self: ScenarioTask) -> str:
    """Fail with a transient error on the first run (so it is retried), succeed on the next."""
    log.info("flaky run %d", self.request.retries)
    print(f"flaky printed on run {self.request.retries}")  # a task that prints
    if not self.request.retries:
        raise _lost_connection()
    return "done"


@shared_task(name=ALWAYS_TRANSIENT, base=ScenarioTask, bind=True)
def always_transient(self: ScenarioTask) -> None:
    """Fail with a transient error on every run: dead-lettered once the retries are used up."""
    log.warning("always_transient run %d", self.request.retries)
    raise _lost_connection()


@shared_task(name=HOLD, base=ScenarioTask, bind=True)
def hold(self: ScenarioTask, marker: str) -> str:
    """Write this child's pid to `marker` and wait to be killed; on a later delivery, return."""
    path = Path(marker)
    if path.exists():
        log.info("hold: delivered again, returning")
        return "released"
    path.write_text(str(os.getpid()))
    log.info("hold: waiting to be killed")
    time.sleep(120)
    return "not killed"
