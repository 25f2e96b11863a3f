"""Which of Celery's own log lines a worker keeps at INFO: idle ticks and repeats go to DEBUG.

Beat runs the view flush and the outbox relay every few seconds; an idle worker would log six
lines per tick pair (beat's "Sending due task", "received", "succeeded") and nothing else. A
task that fails for good is logged once, by its dead letter (`dead_letters.record`), under the
class name it raised; Celery's own failure line for it would say it a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from worker.contracts import FLUSH_VIEW_COUNTS, OUTBOX_RELAY, SAMPLE_METRICS

# Periodic tasks that return how much they did: 0 means the tick found nothing to do.
TICKS = frozenset({FLUSH_VIEW_COUNTS, OUTBOX_RELAY})
# Periodic tasks each of whose runs is routine: their lines go to DEBUG, unless they fail.
ROUTINE = frozenset({SAMPLE_METRICS})
_FAILURES = ("raised expected", "raised unexpected")


def _to_debug(record: logging.LogRecord) -> bool:
    record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class CeleryLines(logging.Filter):
    """Moves to DEBUG: beat sending and the worker receiving a tick, a tick that did nothing, a
    routine run that succeeded, and the failure line of a task id whose dead letter this
    process has just logged."""

    def __init__(self, ticks: Collection[str], dead_lettered: Callable[[str], bool]) -> None:
        super().__init__()
        self.ticks = ticks
        self.dead_lettered = dead_lettered

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "celery.beat":  # 'Scheduler: Sending due task %s (%s)'
            args = record.args if isinstance(record.args, tuple) else ()
            quiet = len(args) == 2 and (args[1] in self.ticks or args[1] in ROUTINE)
            if quiet and record.levelno == logging.INFO:
                return _to_debug(record)
            return True
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or record.levelno < logging.INFO:
            return True
        name = data.get("name")
        if record.name == "celery.worker.strategy" and (name in self.ticks or name in ROUTINE):
            return _to_debug(record)  # received: it is not known yet whether it will do work
        if "return_value" in data and name in self.ticks and data["return_value"] == "0":
            return _to_debug(record)
        if "return_value" in data and name in ROUTINE:
            return _to_debug(record)
        task_id = data.get("id")
        failed = data.get("description") in _FAILURES and isinstance(task_id, str)
        if failed and self.dead_lettered(str(task_id)):
            return _to_debug(record)
        return True


CELERY_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


def install(dead_lettered: Callable[[str], bool]) -> CeleryLines:
    """Attach the filter to the Celery loggers that write these lines (once per process)."""
    line_filter = CeleryLines(TICKS, dead_lettered)
    for name in CELERY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, CeleryLines)]:
            logger.removeFilter(old)
        logger.addFilter(line_filter)
    return line_filter
