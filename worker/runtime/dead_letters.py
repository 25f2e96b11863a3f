"""Dead letters written by the runtime: every task that failed for good is kept, once logged."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from worker import ledger
from worker.db import session_scope

log = logging.getLogger(__name__)


def record(
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: BaseException,
    attempts: int,
) -> None:
    """Write the dead letter of `task_id` in its own transaction, with one ERROR line.

    Never raises: if the dead letter cannot be written, the arguments go to the log instead.
    """
    log.error("%s[%s] failed for good: %s: %s", task_name, task_id, type(error).__name__, error)
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
            )
    except Exception:
        log.exception(
            "%s[%s] could not be dead-lettered; arguments were %r %r",
            task_name,
            task_id,
            args,
            kwargs,
        )
