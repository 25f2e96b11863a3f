"""The outbox relay: publishes pending outbox rows in order, marks them sent; status and pruning.

Run by beat (`tasks.outbox.relay_outbox`) and by operators (`python -m worker outbox ...`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.orm import Session

from worker import ledger
from worker.contracts import MAX_ERROR_LENGTH
from worker.db import session_scope
from worker.models import OutboxMessage
from worker.producer.client import (
    PublishError,
    TaskClient,
    TaskMessage,
    tasks,
)
from worker.producer.correlation import valid_correlation_id
from worker.producer.outbox import InvalidOutboxRow

log = logging.getLogger(__name__)

# The relay has its own loop: fail fast on a dead broker, but survive one stale connection.
RELAY_RETRY_POLICY: Final[Mapping[str, float]] = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


def _message(row: Row[Any]) -> TaskMessage:
    """The message a row describes, or `InvalidOutboxRow` saying what is wrong with it."""
    args, kwargs, options = row.args, row.kwargs, row.options
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
        raise InvalidOutboxRow("args must be a JSON array, kwargs and options JSON objects")
    unknown = set(options) - {"eta", "queue", "correlation_id"}
    if unknown:
        raise InvalidOutboxRow(f"unknown option(s): {', '.join(sorted(unknown))}")
    eta = None
    if options.get("eta") is not None:
        try:
            eta = datetime.fromisoformat(options["eta"])
        except (TypeError, ValueError):
            raise InvalidOutboxRow(f"eta is not an ISO 8601 time: {options['eta']!r}") from None
        if eta.tzinfo is None:
            raise InvalidOutboxRow(f"eta has no time zone: {options['eta']!r}")
    queue = options.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise InvalidOutboxRow(f"queue must be a string, got {queue!r}")
    correlation = options.get("correlation_id")
    if correlation is not None and not valid_correlation_id(correlation):
        raise InvalidOutboxRow(f"correlation_id is not a correlation id: {correlation!r:.60}")
    return TaskMessage(
        task_name=row.task_name,
        task_id=row.task_id,
        args=tuple(args),
        kwargs=kwargs,
        eta=eta,
        queue=queue,
        correlation_id=correlation,
    )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one relay batch did: rows seen, published, dead-lettered; the broker error if any."""

    seen: int
    sent: int
    dead_lettered: int
    error: str | None = None


def relay_batch(session: Session, client: TaskClient, batch_size: int = 100) -> BatchResult:
    """Publish up to `batch_size` pending rows in id order, skipping rows another relay holds.

    Stops at the first broker error, so later rows are never published before earlier ones;
    that row keeps waiting with `attempts` and `last_error` updated.
    """
    rows = session.execute(
        select(
            OutboxMessage.id,
            OutboxMessage.task_id,
            OutboxMessage.task_name,
            OutboxMessage.args,
            OutboxMessage.kwargs,
            OutboxMessage.options,
        )
        .where(OutboxMessage.sent_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    sent: list[int] = []
    dead = 0
    error: str | None = None
    for row in rows:
        try:
            message = _message(row)
        except InvalidOutboxRow as invalid:
            _dead_letter(session, row, invalid)
            dead += 1
            continue
        try:
            client.publish(message, retry_policy=RELAY_RETRY_POLICY)
        except PublishError as failure:
            error = str(failure)[:MAX_ERROR_LENGTH]
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(attempts=OutboxMessage.attempts + 1, last_error=error)
            )
            break
        sent.append(row.id)
    if sent:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(sent))
            .values(sent_at=func.now(), attempts=OutboxMessage.attempts + 1, last_error=None)
        )
    return BatchResult(seen=len(rows), sent=len(sent), dead_lettered=dead, error=error)


def _dead_letter(session: Session, row: Row[Any], error: InvalidOutboxRow) -> None:
    # A row that can never be published must not block the rows behind it: it leaves the
    # outbox for task_failures, where it can be inspected and requeued.
    log.error("outbox row %s (%s[%s]) dead-lettered: %s", row.id, row.task_name, row.task_id, error)
    ledger.record_failure(
        session,
        task_id=row.task_id,
        task_name=row.task_name,
        args=row.args if isinstance(row.args, list) else [row.args],
        kwargs=row.kwargs if isinstance(row.kwargs, dict) else {"kwargs": row.kwargs},
        error=error,
        correlation_id=_correlation(row.options),
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id)
        .values(
            sent_at=func.now(),
            attempts=OutboxMessage.attempts + 1,
            last_error=f"dead-lettered, not published: {error}"[:MAX_ERROR_LENGTH],
        )
    )


def _correlation(options: object) -> str | None:
    # A row dead-lettered for a bad option keeps its correlation id if that one is good.
    value = options.get("correlation_id") if isinstance(options, dict) else None
    return value if valid_correlation_id(value) else None


@dataclass(slots=True)
class RelayReport:
    """Totals of one relay run; `error` is the broker error that left rows pending, if any."""

    sent: int = 0
    dead_lettered: int = 0
    batches: int = 0
    error: str | None = None


def relay(
    client: TaskClient | None = None,
    *,
    batch_size: int = 100,
    max_seconds: float | None = None,
    scope: Callable[[], AbstractContextManager[Session]] = session_scope,
) -> RelayReport:
    """Publish pending rows, one short transaction per batch, until none are left.

    Stops early when the broker fails or after `max_seconds`. Each row is published with its
    `task_id` as the Celery task id: a relay that dies between publishing and marking a row sent
    publishes it again, and the worker's processed-task ledger applies that task id once.
    """
    client = client or tasks
    report = RelayReport()
    started = time.monotonic()
    while True:
        with scope() as session:
            batch = relay_batch(session, client, batch_size)
        report.batches += 1
        report.sent += batch.sent
        report.dead_lettered += batch.dead_lettered
        if batch.error is not None:
            report.error = batch.error
            log.warning("outbox relay: broker unavailable, rows stay pending: %s", batch.error)
            break
        if batch.seen < batch_size:
            break
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
    if report.sent or report.dead_lettered:
        log.info("outbox relay: %d published, %d dead-lettered", report.sent, report.dead_lettered)
    return report


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """Pending rows, how old the oldest is, how many failed to publish, the latest error."""

    pending: int
    oldest_pending_seconds: float | None
    failing: int
    last_error: str | None


def status(session: Session) -> OutboxStatus:
    """A snapshot of the outbox for operators."""
    pending = OutboxMessage.sent_at.is_(None)
    count, oldest, failing = session.execute(
        select(
            func.count(),
            func.extract("epoch", func.now() - func.min(OutboxMessage.created_at)),
            func.count().filter(OutboxMessage.attempts > 0),
        ).where(pending)
    ).one()
    last_error = session.scalar(
        select(OutboxMessage.last_error)
        .where(pending, OutboxMessage.last_error.is_not(None))
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    )
    return OutboxStatus(
        pending=int(count),
        oldest_pending_seconds=None if oldest is None else float(oldest),
        failing=int(failing),
        last_error=last_error,
    )


def prune_sent(session: Session, older_than: timedelta) -> int:
    """Delete rows sent more than `older_than` ago; return how many."""
    result = session.execute(
        delete(OutboxMessage).where(OutboxMessage.sent_at < func.now() - older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)
