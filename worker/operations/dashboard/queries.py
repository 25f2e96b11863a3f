"""What the dashboard reads from PostgreSQL: dead letters a page at a time, the ledger by minute,
the outbox. Each read is an index range (migration 0006), whatever the tables hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.contracts import RECORD_REFUSAL
from worker.models import OutboxMessage, TaskFailure
from worker.operations import deadletters, relay
from worker.producer.viewbuffer import BATCH_TASK_NAME

PAGE_SIZE: Final = 50
# Counting stops here: "10,000 or more" costs what 10,000 costs (deadletters.count_failures).
COUNT_CAP: Final = 10_000
MINUTES: Final = 60
CHOICES_LIMIT: Final = 200


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the dashboard shows it."""

    task_id: str
    task_name: str
    error_class: str
    error_message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    correlation_id: str | None
    args: Any
    kwargs: Any

    @classmethod
    def of(cls, row: TaskFailure) -> DeadLetter:
        return cls(
            task_id=row.task_id,
            task_name=row.task_name,
            error_class=row.error_class,
            error_message=row.error_message,
            attempts=row.attempts,
            first_failed_at=row.first_failed_at,
            last_failed_at=row.last_failed_at,
            correlation_id=row.correlation_id,
            args=row.args,
            kwargs=row.kwargs,
        )


@dataclass(frozen=True)
class DeadLetterPage:
    """A page of dead letters, newest first, and how many match (at most COUNT_CAP)."""

    rows: list[DeadLetter]
    page: int
    page_size: int
    matching: int
    matching_capped: bool
    task: str | None
    error: str | None

    @property
    def pages(self) -> int | None:
        """How many pages there are; None when there are more than the count reads."""
        if self.matching_capped:
            return None
        return max(1, -(-self.matching // self.page_size))

    @property
    def has_next(self) -> bool:
        last = self.pages
        return len(self.rows) == self.page_size if last is None else self.page < last


def dead_letter_page(
    session: Session, *, task: str | None, error: str | None, page: int
) -> DeadLetterPage:
    """Page `page` (from 1) of the dead letters of `task` and/or `error`, newest first."""
    rows = deadletters.list_failures(
        session,
        task_name=task,
        error_class=error,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    matching = deadletters.count_failures(session, task_name=task, error_class=error, cap=COUNT_CAP)
    return DeadLetterPage(
        rows=[DeadLetter.of(row) for row in rows],
        page=page,
        page_size=PAGE_SIZE,
        matching=matching,
        matching_capped=matching >= COUNT_CAP,
        task=task,
        error=error,
    )


# The distinct values of an indexed column, one index probe each (a "loose index scan").
_DISTINCT = """
WITH RECURSIVE found(value) AS (
    (SELECT {column} FROM task_failures ORDER BY {column} LIMIT 1)
    UNION ALL
    SELECT (SELECT {column} FROM task_failures WHERE {column} > found.value
            ORDER BY {column} LIMIT 1)
    FROM found WHERE found.value IS NOT NULL
)
SELECT value FROM found WHERE value IS NOT NULL LIMIT :limit
"""
_DISTINCT_TASKS = text(_DISTINCT.format(column="task_name"))
_DISTINCT_ERRORS = text(_DISTINCT.format(column="error_class"))


def filter_choices(session: Session) -> tuple[list[str], list[str]]:
    """The task names and error classes dead letters have, for the filters."""
    limit = {"limit": CHOICES_LIMIT}
    tasks = list(session.scalars(_DISTINCT_TASKS, limit))
    errors = list(session.scalars(_DISTINCT_ERRORS, limit))
    return tasks, errors


@dataclass(frozen=True)
class Minute:
    """Tasks applied (in the ledger) and dead-lettered in one minute."""

    start: datetime
    applied: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class Throughput:
    """The last MINUTES minutes, oldest first, and the last view batch applied in them."""

    minutes: list[Minute]
    last_view_flush: datetime | None
    now: datetime
    applied: int = field(init=False)
    dead_lettered: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "applied", sum(m.applied for m in self.minutes))
        object.__setattr__(self, "dead_lettered", sum(m.dead_lettered for m in self.minutes))


# The ledger's own index on finished_at bounds this to the last hour's rows. Refusals claim the
# refused message's id and view batches are flushes: neither is a task applied.
_APPLIED = text("""
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE task_name NOT IN (:batch, :refusal)) AS applied,
       max(finished_at) FILTER (WHERE task_name = :batch) AS last_flush
FROM processed_tasks WHERE finished_at >= :since GROUP BY 1
""")
_DEAD_LETTERED = text("""
SELECT date_trunc('minute', last_failed_at) AS minute, count(*) AS dead_lettered
FROM task_failures WHERE last_failed_at >= :since GROUP BY 1
""")


def throughput(session: Session) -> Throughput:
    """Tasks per minute by outcome over the last hour, from the ledger and the dead letters."""
    now: datetime = session.scalar(text("SELECT now()")) or datetime.now().astimezone()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    applied: dict[datetime, int] = {}
    last_flush: datetime | None = None
    params = {"since": first, "batch": BATCH_TASK_NAME, "refusal": RECORD_REFUSAL}
    for row in session.execute(_APPLIED, params):
        applied[row.minute] = int(row.applied)
        if row.last_flush is not None and (last_flush is None or row.last_flush > last_flush):
            last_flush = row.last_flush
    dead = {row.minute: int(row.dead_lettered) for row in session.execute(_DEAD_LETTERED, params)}
    minutes = []
    for offset in range(MINUTES):
        start = first + timedelta(minutes=offset)
        minutes.append(Minute(start, applied.get(start, 0), dead.get(start, 0)))
    return Throughput(minutes=minutes, last_view_flush=last_flush, now=now)


@dataclass(frozen=True)
class PendingRow:
    """An outbox row not yet published."""

    id: int
    task_id: str
    task_name: str
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class Outbox:
    """The relay's status (as `outbox status` prints it) and the oldest pending rows."""

    status: relay.OutboxStatus
    oldest: Sequence[PendingRow]


def outbox(session: Session, limit: int = PAGE_SIZE) -> Outbox:
    """The outbox's status and its `limit` oldest pending rows (the partial pending index)."""
    rows = session.execute(
        select(
            OutboxMessage.id,
            OutboxMessage.task_id,
            OutboxMessage.task_name,
            OutboxMessage.created_at,
            OutboxMessage.attempts,
            OutboxMessage.last_error,
        )
        .where(OutboxMessage.sent_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    pending = [PendingRow(**row._asdict()) for row in rows]
    return Outbox(status=relay.status(session), oldest=pending)
