"""Dead letters written by the runtime: every task that failed for good is kept, once logged."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from worker import ledger
from worker.db import session_scope
from worker.errors import PermanentError

log = logging.getLogger(__name__)
# Task ids whose failure this process logged: Celery's own line for them goes to DEBUG.
_logged: deque[str] = deque(maxlen=64)


def logged(task_id: str) -> bool:
    """True if this process has just logged the failure of `task_id` with its dead letter."""
    return task_id in _logged


def record(
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: BaseException,
    attempts: int,
    reason: str | None = None,
    correlation_id: str | None = None,
) -> None:
    """Write the dead letter of `task_id` in its own transaction, with one ERROR line.

    The line is the only one for the failure, under the class name the task raised; it carries
    the traceback unless the error is a `PermanentError` (the input was wrong, not the code).
    Never raises: if the dead letter cannot be written, the arguments go to the log instead.
    `correlation_id` (the request that caused the task) is kept with the dead letter.
    """
    why = f" ({reason})" if reason else ""
    log.error(
        "%s[%s] failed for good%s: %s: %s",
        task_name,
        task_id,
        why,
        type(error).__name__,
        error,
        exc_info=None if isinstance(error, PermanentError) else error,
    )
    _logged.append(task_id)
    try:
        with session_scope() as session:
            ledger.record_failure(
                session,
                task_id=task_id,
                task_name=task_name,
                args=args,
                kwargs=kwargs,
                error=error,
                attempts=attempts,
                correlation_id=correlation_id,
            )
    except Exception:
        log.exception(
            "%s[%s] could not be dead-lettered; arguments were %r %r",
            task_name,
            task_id,
            args,
            kwargs,
        )
