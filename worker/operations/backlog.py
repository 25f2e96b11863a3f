"""Backlog gauges sampled by a pool child and kept in Redis, for a main process without PostgreSQL.

Beat sends `tasks.maintenance.sample_metrics` every SAMPLE_METRICS_INTERVAL seconds. The child
that runs it counts the dead letters and the pending outbox rows (one call of the SECURITY DEFINER
function `sample_backlog()`, migration 0005) and the views buffered in Redis (summed by Redis
itself), and stores them in one hash next to the queue. The main process reads that hash when
scraped (`worker.operations.metrics`). The hash expires after a few intervals: with beat or
every worker stopped the gauges go missing instead of freezing at old values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from redis import Redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.contracts import SAMPLE_METRICS_INTERVAL
from worker.producer import viewbuffer

SAMPLE_TTL: Final = int(SAMPLE_METRICS_INTERVAL * 4)

_SAMPLE_BACKLOG = text(
    "SELECT dead_letters, outbox_pending, outbox_oldest_age_seconds FROM sample_backlog()"
)
# Sums the views of the given hashes in Redis: nothing but the total crosses the network. The
# hashes' batch-id field is not a number and is skipped.
_SUM_VIEWS = """
local total = 0
for _, key in ipairs(KEYS) do
    for _, value in ipairs(redis.call('HVALS', key)) do
        total = total + (tonumber(value) or 0)
    end
end
return total
"""


@dataclass(frozen=True)
class Backlog:
    """One sample; a figure that could not be read is None (its gauge is left out)."""

    sampled_at: float
    dead_letters: int | None = None
    outbox_pending: int | None = None
    outbox_oldest_age_seconds: float | None = None
    view_buffer_pending_views: int | None = None

    def age(self, now: float) -> float | None:
        """The oldest pending outbox row's age at `now`: it kept ageing since the sample."""
        if self.outbox_oldest_age_seconds is None:
            return None
        return self.outbox_oldest_age_seconds + max(0.0, now - self.sampled_at)


def sample_key(queue: str) -> str:
    """The hash that keeps the sample of the workers of `queue` (its hash tag, as the queue's)."""
    return "metrics:{" + queue + "}:backlog"


def database_counts(session: Session) -> tuple[int, int, float | None]:
    """Dead letters, pending outbox rows, and the oldest pending row's age in seconds."""
    row = session.execute(_SAMPLE_BACKLOG).one()
    age = None if row.outbox_oldest_age_seconds is None else float(row.outbox_oldest_age_seconds)
    return int(row.dead_letters), int(row.outbox_pending), age


def pending_views(redis: Redis, queue: str) -> int:
    """Views buffered and not yet applied: the pending hash and every unflushed batch."""
    keys = viewbuffer.buffer_keys(queue)
    batches = [
        keys.batch(b.decode() if isinstance(b, bytes) else b) for b in redis.smembers(keys.batches)
    ]
    # register_script runs EVALSHA, and EVAL once on a server that does not have it yet.
    return int(redis.register_script(_SUM_VIEWS)(keys=[keys.pending, *batches]))


def store(redis: Redis, queue: str, backlog: Backlog) -> None:
    """Keep `backlog` as the latest sample of `queue`, replacing the previous one."""
    values: dict[Any, str] = {
        field.name: repr(getattr(backlog, field.name))
        for field in fields(backlog)
        if getattr(backlog, field.name) is not None
    }
    with redis.pipeline(transaction=True) as pipe:
        pipe.delete(sample_key(queue))
        pipe.hset(sample_key(queue), mapping=values)
        pipe.expire(sample_key(queue), SAMPLE_TTL)
        pipe.execute()


def parse(stored: Mapping[bytes | str, bytes | str]) -> Backlog | None:
    """The sample in a hash `store` wrote (as HGETALL returns it); None if there is none."""
    values: dict[str, float] = {}
    for key, value in stored.items():
        name = key.decode() if isinstance(key, bytes) else key
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            values[name] = number
    sampled_at = values.get("sampled_at")
    if sampled_at is None:
        return None

    def whole(name: str) -> int | None:
        return int(values[name]) if name in values else None

    return Backlog(
        sampled_at=sampled_at,
        dead_letters=whole("dead_letters"),
        outbox_pending=whole("outbox_pending"),
        outbox_oldest_age_seconds=values.get("outbox_oldest_age_seconds"),
        view_buffer_pending_views=whole("view_buffer_pending_views"),
    )
