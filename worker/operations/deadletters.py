"""Dead letters (`task_failures`): list, show, retry without applying a task twice, purge."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from worker import ledger
from worker.contracts import PUBLIC_TASKS, InvalidTaskArguments, validate_arguments
from worker.models import TaskFailure

# publish(task_name, args, kwargs, task_id): sends the task to the broker or raises.
Publisher = Callable[[str, list[Any], dict[str, Any], str], None]

_REQUEUE_NAMESPACE = uuid.UUID("6f0c2a51-4c3e-4c55-9a57-3bd9e3f0d8a1")


def _matching(query: Select[Any], task_name: str | None, error_class: str | None) -> Select[Any]:
    if task_name is not None:
        query = query.where(TaskFailure.task_name == task_name)
    if error_class is not None:
        query = query.where(TaskFailure.error_class == error_class)
    return query


def list_failures(
    session: Session,
    *,
    task_name: str | None = None,
    error_class: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Sequence[TaskFailure]:
    """The most recent dead letters first, optionally of one task name and/or error class.

    Each filter, or none, reads one index in this order (migration 0006).
    """
    query = select(TaskFailure).order_by(TaskFailure.last_failed_at.desc(), TaskFailure.task_id)
    query = _matching(query, task_name, error_class)
    return session.scalars(query.limit(limit).offset(offset)).all()


def count_failures(
    session: Session,
    *,
    task_name: str | None = None,
    error_class: str | None = None,
    cap: int | None = None,
) -> int:
    """How many dead letters there are (of that task name and/or error class).

    With `cap`, counting stops there: the answer is at most `cap`, and `cap` means "that many
    or more", so a page count costs the same at a million dead letters as at ten thousand.
    """
    matching = _matching(select(TaskFailure.task_id), task_name, error_class)
    if cap is not None:
        matching = matching.limit(cap)
    return session.scalar(select(func.count()).select_from(matching.subquery())) or 0


def get_failure(session: Session, task_id: str) -> TaskFailure | None:
    """The dead letter of `task_id`, if any."""
    return session.get(TaskFailure, task_id)


def requeue_id(failure: TaskFailure) -> str:
    """The new task id of a requeued dead letter: the same for the same failure, so requeueing
    twice (e.g. after a crash between publishing and deleting) is applied once."""
    stamp = failure.last_failed_at.isoformat() if failure.last_failed_at else ""
    return str(uuid.uuid5(_REQUEUE_NAMESPACE, f"{failure.task_id}:{failure.attempts}:{stamp}"))


class Outcome(StrEnum):
    """What retrying one dead letter did."""

    REQUEUED = "requeued"  # published under `requeue_id`; the dead letter is deleted
    SKIPPED = "skipped"  # its effect was already committed; the dead letter is deleted
    REFUSED = "refused"  # not requeueable; the dead letter is kept, nothing else changes
    MISSING = "missing"  # no dead letter with that id (never was, or retried or purged already)


class Refusal(StrEnum):
    """Why a dead letter is not requeued."""

    NOT_PUBLIC = "not a public task"
    INVALID_ARGUMENTS = "invalid arguments"


@dataclass(frozen=True)
class RetryOutcome:
    """The result of retrying one dead letter; `describe()` is its line for an operator."""

    task_id: str
    outcome: Outcome
    detail: str = ""
    new_task_id: str | None = None
    refusal: Refusal | None = None

    def describe(self) -> str:
        """One line naming the dead letter and what happened to it."""
        if self.outcome is Outcome.REQUEUED:
            return f"requeued {self.task_id} as {self.new_task_id}"
        if self.outcome is Outcome.MISSING:
            return f"not found: no dead letter with task id {self.task_id!r}"
        return f"{self.outcome} {self.task_id}: {self.detail}"


class PublishFailed(Exception):
    """The broker did not take a requeued dead letter: its transaction must roll back."""

    def __init__(self, task_id: str, error: BaseException) -> None:
        super().__init__(f"could not publish {task_id}: {type(error).__name__}: {error}")
        self.task_id = task_id


_JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), "an object" if isinstance(value, dict) else "a list")


def refusal(failure: TaskFailure) -> tuple[Refusal, str] | None:
    """Why `failure` must not be requeued, or None: a public task with exactly valid arguments.

    The row's args and kwargs are checked as stored, never coerced: what is published is what
    was validated.
    """
    name = failure.task_name
    if name not in PUBLIC_TASKS:
        allowed = ", ".join(sorted(PUBLIC_TASKS))
        return Refusal.NOT_PUBLIC, f"{name} is not a public task (only {allowed} are requeued)"
    if not isinstance(failure.args, list):
        return Refusal.INVALID_ARGUMENTS, f"args is {_json_type(failure.args)}, not a JSON list"
    if not isinstance(failure.kwargs, dict):
        shown = _json_type(failure.kwargs)
        return Refusal.INVALID_ARGUMENTS, f"kwargs is {shown}, not a JSON object"
    try:
        validate_arguments(name, failure.args, failure.kwargs)
    except InvalidTaskArguments as error:
        return Refusal.INVALID_ARGUMENTS, f"would fail again: {error}"
    return None


def retry(session: Session, task_id: str, publish: Publisher) -> RetryOutcome:
    """Requeue one dead letter under `requeue_id` unless that could apply its task twice.

    In the caller's transaction: the row is locked, then refused (kept) if it is not a public
    task with valid arguments, skipped (deleted) if its task id is in `processed_tasks`, else
    published and deleted after publishing. Requeueing also claims the original task id, so a
    delivery of the original still in flight (e.g. one falsely dead-lettered as a poison
    message) waits for this transaction and then skips. Raises PublishFailed if the broker
    refuses the message; the caller must roll back, which keeps the dead letter.
    """
    failure = session.scalar(
        select(TaskFailure).where(TaskFailure.task_id == task_id).with_for_update()
    )
    if failure is None:
        return RetryOutcome(task_id, Outcome.MISSING)
    refused = refusal(failure)
    if refused is not None:
        reason, detail = refused
        return RetryOutcome(task_id, Outcome.REFUSED, f"{detail}; kept", refusal=reason)
    new_id = requeue_id(failure)
    applied = None
    if not ledger.claim(session, task_id, failure.task_name):
        applied = task_id
    elif ledger.is_claimed(session, new_id):
        applied = new_id  # requeued before, but the dead letter outlived it (a crash)
    if applied is not None:
        session.delete(failure)
        detail = f"already applied (task id {applied} is in processed_tasks); dead letter deleted"
        return RetryOutcome(task_id, Outcome.SKIPPED, detail)
    try:
        publish(failure.task_name, failure.args, failure.kwargs, new_id)
    except Exception as error:
        raise PublishFailed(task_id, error) from error
    session.delete(failure)
    return RetryOutcome(task_id, Outcome.REQUEUED, new_task_id=new_id)


def dead_letter_ids(
    session: Session, *, task_name: str | None = None, error_class: str | None = None
) -> list[str]:
    """Every dead letter's task id, oldest failure first, optionally of one task name and/or
    error class."""
    query = select(TaskFailure.task_id).order_by(TaskFailure.last_failed_at, TaskFailure.task_id)
    return list(session.scalars(_matching(query, task_name, error_class)))


def retry_each(
    scope: Callable[[], AbstractContextManager[Session]],
    task_ids: Iterable[str],
    publish: Publisher,
) -> Iterator[RetryOutcome]:
    """Retry each dead letter in a transaction of its own from `scope`, yielding its outcome.

    A published message cannot be taken back, so each deletion commits before the next row.
    Stops at the first PublishFailed (the broker is down: the rest would fail too).
    """
    for task_id in task_ids:
        with scope() as session:
            outcome = retry(session, task_id, publish)
        yield outcome


def summarize(outcomes: Sequence[RetryOutcome]) -> str:
    """One line: requeued N, skipped N (already applied), refused N (reasons)[, not found N]."""
    counts = Counter(item.outcome for item in outcomes)
    reasons = Counter(item.refusal for item in outcomes if item.refusal is not None)
    refused = f"refused {counts[Outcome.REFUSED]}"
    if reasons:
        refused += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")"
    parts = [
        f"requeued {counts[Outcome.REQUEUED]}",
        f"skipped {counts[Outcome.SKIPPED]} (already applied)",
        refused,
    ]
    if counts[Outcome.MISSING]:
        parts.append(f"not found {counts[Outcome.MISSING]}")
    return ", ".join(parts)


def purge(
    session: Session,
    *,
    task_id: str | None = None,
    older_than: timedelta | None = None,
    task_name: str | None = None,
    error_class: str | None = None,
) -> int:
    """Delete one dead letter, those last failed before `older_than` ago, those of a task name
    and/or error class, or (none of these) all."""
    statement = delete(TaskFailure)
    if task_id is not None:
        statement = statement.where(TaskFailure.task_id == task_id)
    if older_than is not None:
        statement = statement.where(TaskFailure.last_failed_at < func.now() - older_than)
    if task_name is not None:
        statement = statement.where(TaskFailure.task_name == task_name)
    if error_class is not None:
        statement = statement.where(TaskFailure.error_class == error_class)
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)
