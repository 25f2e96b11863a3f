"""Transactional outbox, writer side: tasks written in the caller's transaction.

The relay that publishes them later is `worker.operations.relay`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from worker.models import OutboxMessage
from worker.producer.client import (
    SendOptions,
    TaskCalls,
    TaskMessage,
)
from worker.producer.client import build_message as _build_message

log = logging.getLogger(__name__)


class InvalidOutboxRow(ValueError):
    """A row (e.g. inserted by hand) whose arguments or options cannot be published."""


def _insert(session: Session, message: TaskMessage) -> None:
    eta = message.eta
    if eta is None and message.countdown is not None:
        # Fixed now, so a relay that runs late does not push the task further back.
        eta = datetime.now(UTC) + timedelta(seconds=message.countdown)
    options: dict[str, str] = {}
    if eta is not None:
        options["eta"] = eta.isoformat()
    if message.queue is not None:
        options["queue"] = message.queue
    if message.correlation_id is not None:
        options["correlation_id"] = message.correlation_id
    session.execute(
        pg_insert(OutboxMessage)
        .values(
            task_id=message.task_id,
            task_name=message.task_name,
            args=list(message.args),
            kwargs=dict(message.kwargs),
            options=options,
        )
        # The same idempotency key twice is one task.
        .on_conflict_do_nothing(index_elements=[OutboxMessage.task_id])
    )


class _Outbox(TaskCalls):
    def __init__(self, session: Session) -> None:
        self._session = session

    def submit(self, message: TaskMessage) -> str:
        _insert(self._session, message)
        return message.task_id


def add(
    session: Session,
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Unpack[SendOptions],
) -> str:
    """Check a task call and write it to the outbox in `session`'s transaction; return its id.

    The row exists exactly when the caller's change does, whether or not Redis is up. Adding
    the same `task_id` twice writes one row.
    """
    return _Outbox(session).submit(_build_message(task_name, args, kwargs, **options))


def in_outbox(session: Session) -> TaskCalls:
    """The typed task calls, written to the outbox: `in_outbox(db).deactivate_user(7)`."""
    return _Outbox(session)
