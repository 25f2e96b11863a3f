"""Bookkeeping that makes task effects exactly-once and records dead letters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from worker.models import ProcessedTask, TaskFailure

MAX_ERROR_MESSAGE = 2000


def claim(session: Session, task_id: str, task_name: str) -> bool:
    """Record `task_id` as processed in the caller's transaction; False if it already was."""
    claimed = session.execute(
        pg_insert(ProcessedTask)
        .values(task_id=task_id, task_name=task_name)
        .on_conflict_do_nothing(index_elements=[ProcessedTask.task_id])
        .returning(ProcessedTask.task_id)
    ).scalar_one_or_none()
    return claimed is not None


def prune_processed(session: Session, older_than: timedelta) -> int:
    """Forget processed task ids older than the retention; return how many were removed."""
    result = session.execute(
        delete(ProcessedTask).where(ProcessedTask.finished_at < func.now() - older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)


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
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    error: BaseException | str,
    error_class: str | None = None,
    attempts: int = 1,
) -> None:
    """Insert or update the dead letter for `task_id`."""
    message = str(error)[:MAX_ERROR_MESSAGE]
    cls = error_class or (type(error).__name__ if isinstance(error, BaseException) else "Error")
    values = {
        "task_id": task_id,
        "task_name": task_name,
        "args": _jsonable(list(args)),
        "kwargs": _jsonable(dict(kwargs)),
        "error_class": cls,
        "error_message": message,
        "attempts": attempts,
    }
    statement = pg_insert(TaskFailure).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[TaskFailure.task_id],
            set_={
                "error_class": statement.excluded.error_class,
                "error_message": statement.excluded.error_message,
                "attempts": func.greatest(TaskFailure.attempts + 1, statement.excluded.attempts),
                "last_failed_at": func.now(),
            },
        )
    )
