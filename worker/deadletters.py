"""Dead letters (`task_failures`): list, show, requeue as a new task, purge."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from worker.contracts import InvalidTaskArguments, validate_arguments
from worker.models import TaskFailure

# publish(task_name, args, kwargs, task_id): sends the task to the broker or raises.
Publisher = Callable[[str, list[Any], dict[str, Any], str], None]

_REQUEUE_NAMESPACE = uuid.UUID("6f0c2a51-4c3e-4c55-9a57-3bd9e3f0d8a1")


class CannotRequeue(Exception):
    """A dead letter that requeueing cannot help: unknown, or its arguments are invalid."""


def list_failures(
    session: Session, *, task_name: str | None = None, limit: int = 50
) -> Sequence[TaskFailure]:
    """The most recent dead letters first, optionally of one task name."""
    query = select(TaskFailure).order_by(TaskFailure.last_failed_at.desc(), TaskFailure.task_id)
    if task_name is not None:
        query = query.where(TaskFailure.task_name == task_name)
    return session.scalars(query.limit(limit)).all()


def count_failures(session: Session) -> int:
    """How many dead letters there are."""
    return session.scalar(select(func.count()).select_from(TaskFailure)) or 0


def get_failure(session: Session, task_id: str) -> TaskFailure | None:
    """The dead letter of `task_id`, if any."""
    return session.get(TaskFailure, task_id)


def requeue_id(failure: TaskFailure) -> str:
    """The new task id of a requeued dead letter: the same for the same failure, so requeueing
    twice (e.g. after a crash between publishing and deleting) is applied once."""
    stamp = failure.last_failed_at.isoformat() if failure.last_failed_at else ""
    return str(uuid.uuid5(_REQUEUE_NAMESPACE, f"{failure.task_id}:{failure.attempts}:{stamp}"))


def requeue(session: Session, task_id: str, publish: Publisher) -> str:
    """Publish the dead letter's task again under a new id, then delete the dead letter.

    The row is locked first and deleted only after publishing succeeded, in the caller's
    transaction; returns the new task id.
    """
    failure = session.scalar(
        select(TaskFailure).where(TaskFailure.task_id == task_id).with_for_update()
    )
    if failure is None:
        raise CannotRequeue(f"no dead letter with task id {task_id!r}")
    args = list(failure.args) if isinstance(failure.args, list) else []
    kwargs = dict(failure.kwargs) if isinstance(failure.kwargs, dict) else {}
    try:
        validate_arguments(failure.task_name, args, kwargs)
    except InvalidTaskArguments as error:
        raise CannotRequeue(f"{task_id}: would fail again: {error}") from None
    new_id = requeue_id(failure)
    publish(failure.task_name, args, kwargs, new_id)
    session.delete(failure)
    return new_id


def purge(
    session: Session, *, task_id: str | None = None, older_than: timedelta | None = None
) -> int:
    """Delete one dead letter, those last failed before `older_than` ago, or (neither) all."""
    statement = delete(TaskFailure)
    if task_id is not None:
        statement = statement.where(TaskFailure.task_id == task_id)
    if older_than is not None:
        statement = statement.where(TaskFailure.last_failed_at < func.now() - older_than)
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)
