"""Enqueue after commit: a task is published only once the session's transaction commits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Unpack

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from worker import ledger
from worker.models import TaskFailure
from worker.producer.client import (
    PublishError,
    SendOptions,
    TaskCalls,
    TaskClient,
    TaskMessage,
    tasks,
)
from worker.producer.client import build_message as _build_message

log = logging.getLogger(__name__)

_STATE_KEY: Final = "worker.producer.enqueue"


@dataclass(slots=True)
class _Pending:
    transaction: SessionTransaction
    client: TaskClient
    message: TaskMessage


@dataclass(slots=True)
class _State:
    pending: list[_Pending] = field(default_factory=list)
    committed: bool = False


def _state(session: Session) -> _State:
    state = session.info.get(_STATE_KEY)
    if state is None:
        state = session.info[_STATE_KEY] = _State()
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_soft_rollback", _after_soft_rollback)
        event.listen(session, "after_transaction_end", _after_transaction_end)
    assert isinstance(state, _State)
    return state


def _current_transaction(session: Session) -> SessionTransaction:
    transaction = session.get_nested_transaction() or session.get_transaction()
    # No transaction yet (nothing has run on the session): begin the one that will commit.
    return transaction if transaction is not None else session.begin()


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _after_commit(session: Session) -> None:
    # Also fired when a savepoint is released; only the outermost commit makes rows visible.
    if not session.in_nested_transaction():
        _state(session).committed = True


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    state = _state(session)
    state.pending = [p for p in state.pending if not _within(p.transaction, previous_transaction)]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    state = _state(session)
    pending, committed = state.pending, state.committed
    state.pending, state.committed = [], False
    if not committed:
        return
    # The transaction is closed and its connection returned: publishing holds no database lock.
    for item in pending:
        try:
            item.client.publish(item.message)
        except PublishError as error:
            _dead_letter(session, item.message, error)


def _dead_letter(session: Session, message: TaskMessage, error: PublishError) -> None:
    """A committed change whose task could not be published: record it, never drop it."""
    log.error("%s; recorded in task_failures", error)
    try:
        bind = session.get_bind(TaskFailure)
        with Session(bind, join_transaction_mode="create_savepoint") as failures, failures.begin():
            ledger.record_failure(
                failures,
                task_id=message.task_id,
                task_name=message.task_name,
                args=message.args,
                kwargs=message.kwargs,
                error=error,
                correlation_id=message.correlation_id,
            )
    except Exception:
        log.exception(
            "%s[%s] was not published and could not be dead-lettered; arguments were %r",
            message.task_name,
            message.task_id,
            dict(message.kwargs),
        )


def enqueue_on_commit(
    session: Session,
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    client: TaskClient | None = None,
    **options: Unpack[SendOptions],
) -> str:
    """Check a task call now and publish it when `session` commits; return its task id."""
    return _AfterCommit(session, client).submit(_build_message(task_name, args, kwargs, **options))


class _AfterCommit(TaskCalls):
    def __init__(self, session: Session, client: TaskClient | None) -> None:
        self._session = session
        self._client = client or tasks

    def submit(self, message: TaskMessage) -> str:
        transaction = _current_transaction(self._session)
        _state(self._session).pending.append(_Pending(transaction, self._client, message))
        return message.task_id


def after_commit(session: Session, client: TaskClient | None = None) -> TaskCalls:
    """The typed task calls, published when `session` commits: `after_commit(db).record_view(1)`.

    Published inside the transaction, a task could run before its row is visible, or for a
    change that is then rolled back. These calls wait in `session.info` and are published in
    call order when the outermost transaction commits; a rollback of the transaction, or of the
    savepoint they were made in, drops them. If the broker is down at that moment the task is
    logged and recorded in `task_failures` (use the outbox for tasks that must not wait for a
    requeue).
    """
    return _AfterCommit(session, client)
