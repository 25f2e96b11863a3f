"""Raw messages refused with no id to dead-letter them under, kept in a capped Redis list.

The quarantine lives next to the queue it came from, in the broker's Redis, so the worker's main
process (which never holds a PostgreSQL connection) can keep a message it cannot even parse.
Operators read and purge it with `python -m worker quarantine ...`.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One quarantined message: why, when, and its bytes (cut at `max_bytes`)."""

    digest: str
    reason: str
    error_class: str
    received_at: str
    size: int
    raw: bytes
    truncated: bool

    def to_json(self) -> str:
        return json.dumps(
            {
                "digest": self.digest,
                "reason": self.reason,
                "error_class": self.error_class,
                "received_at": self.received_at,
                "size": self.size,
                "truncated": self.truncated,
                "raw": base64.b64encode(self.raw).decode(),
            }
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Entry:
        data: dict[str, Any] = json.loads(text)
        return cls(
            digest=str(data["digest"]),
            reason=str(data["reason"]),
            error_class=str(data.get("error_class", "MalformedMessage")),
            received_at=str(data["received_at"]),
            size=int(data["size"]),
            raw=base64.b64decode(data["raw"]),
            truncated=bool(data["truncated"]),
        )


def quarantine_key(queue: str) -> str:
    """The list of quarantined messages of `queue` (the queue's hash tag, for Redis Cluster)."""
    return "quarantine:{" + queue + "}"


def add(
    redis: Redis,
    queue: str,
    *,
    raw: bytes,
    digest: str,
    reason: str,
    error_class: str,
    max_entries: int,
    max_bytes: int,
) -> int:
    """Keep a refused message, newest first; return how many older entries made room for it.

    The list is capped at `max_entries`: the oldest entries beyond it are removed and each one is
    logged at WARNING, so the cap never drops a message silently.
    """
    entry = Entry(
        digest=digest,
        reason=reason,
        error_class=error_class,
        received_at=datetime.now(UTC).isoformat(),
        size=len(raw),
        raw=raw[:max_bytes],
        truncated=len(raw) > max_bytes,
    )
    key = quarantine_key(queue)
    length = int(redis.lpush(key, entry.to_json()))
    dropped = 0
    while length > max_entries:
        oldest = redis.rpop(key)
        if not isinstance(oldest, bytes | str):
            break
        length -= 1
        dropped += 1
        try:
            gone = Entry.from_json(oldest)
            log.warning(
                "quarantine of %s is full (QUARANTINE_MAX_ENTRIES=%d): dropped its oldest entry "
                "%s (%s, received %s)",
                queue,
                max_entries,
                gone.digest,
                gone.reason,
                gone.received_at,
            )
        except (ValueError, KeyError, TypeError):
            log.warning("quarantine of %s is full: dropped an unreadable entry", queue)
    return dropped


def entries(redis: Redis, queue: str, limit: int = 50) -> list[Entry]:
    """The newest `limit` quarantined messages of `queue`."""
    return [Entry.from_json(item) for item in _items(redis, queue, limit)]


def _items(redis: Redis, queue: str, limit: int = 0) -> list[str]:
    items = redis.lrange(quarantine_key(queue), 0, limit - 1)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in items]


def count(redis: Redis, queue: str) -> int:
    """How many messages of `queue` are quarantined."""
    return int(redis.llen(quarantine_key(queue)))


def find(redis: Redis, queue: str, digest: str) -> Entry | None:
    """The quarantined message whose digest starts with `digest`, if any."""
    for item in _items(redis, queue):
        entry = Entry.from_json(item)
        if entry.digest == digest or entry.digest.removeprefix("sha256:").startswith(
            digest.removeprefix("sha256:")
        ):
            return entry
    return None


def purge(redis: Redis, queue: str, digest: str | None = None) -> int:
    """Remove the message(s) with `digest` (a prefix will do), or (None) all; return how many."""
    key = quarantine_key(queue)
    if digest is None:
        removed = count(redis, queue)
        redis.delete(key)
        return removed
    found = find(redis, queue, digest)
    if found is None:
        return 0
    removed = 0
    for item in _items(redis, queue):
        if Entry.from_json(item).digest == found.digest:
            removed += int(redis.lrem(key, 1, item))
    return removed
