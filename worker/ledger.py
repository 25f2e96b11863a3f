"""Bookkeeping that makes task effects exactly-once and records dead letters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from worker.contracts import MAX_ERROR_LENGTH
from worker.models import ProcessedTask


def claim(session: Session, task_id: str, task_name: str) -> bool:
    """Record `task_id` as processed in the caller's transaction; False if it already was."""
    claimed = session.execute(
        pg_insert(ProcessedTask)
        .values(task_id=task_id, task_name=task_name)
        .on_conflict_do_nothing(index_elements=[ProcessedTask.task_id])
        .returning(ProcessedTask.task_id)
    ).scalar_one_or_none()
    return claimed is not None


# Both run as their owner (migrations 0003 and 0004): the runtime role may call them but has no
# DELETE on processed_tasks and no INSERT, UPDATE or DELETE on task_failures.
_PRUNE_PROCESSED = text("SELECT prune_processed_tasks(:retention)")
_RECORD_FAILURE = text(
    "SELECT record_task_failure(:task_id, :task_name, :args, :kwargs, :error_class, "
    ":error_message, :attempts, :correlation_id)"
).bindparams(bindparam("args", type_=JSONB), bindparam("kwargs", type_=JSONB))


def is_claimed(session: Session, task_id: str) -> bool:
    """True if `task_id` is recorded as processed (its effect was committed)."""
    # Only task_id: the runtime role may read no other column of the ledger.
    query = select(ProcessedTask.task_id).where(ProcessedTask.task_id == task_id)
    return session.scalar(query) is not None


def prune_processed(session: Session, older_than: timedelta) -> int:
    """Forget processed task ids older than the retention; return how many were removed.

    The database refuses a retention under one day (an `invalid_parameter_value` error).
    """
    return int(session.scalar(_PRUNE_PROCESSED, {"retention": older_than}) or 0)


ARGUMENTS_NOT_KEPT: Final = "(not kept: too large)"


def _jsonable(value: Any) -> Any:
    """Arguments as JSON, or their repr where they are not JSON (never lose what was sent)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def record_failure(
    session: Session,
    *,
    task_id: str,
    task_name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    error: BaseException | str,
    error_class: str | None = None,
    attempts: int = 1,
    correlation_id: str | None = None,
) -> None:
    """Add the dead letter for `task_id`, or count one more failure of an existing one.

    An existing dead letter keeps its task name, arguments and correlation id (unless it had
    none); its error and last failure time become this one's, and its attempts become
    max(attempts + 1, `attempts`). Arguments that were not kept (None) are stored as a note,
    which `failures retry` refuses to send.
    """
    message = str(error)[:MAX_ERROR_LENGTH]
    cls = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
    session.execute(
        _RECORD_FAILURE,
        {
            "task_id": task_id,
            "task_name": task_name,
            "args": _jsonable(list(args)) if args is not None else ARGUMENTS_NOT_KEPT,
            "kwargs": _jsonable(dict(kwargs)) if kwargs is not None else ARGUMENTS_NOT_KEPT,
            "error_class": cls,
            "error_message": message,
            "attempts": attempts,
            "correlation_id": correlation_id,
        },
    )
