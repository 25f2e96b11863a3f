"""What the dashboard reads from Redis: queues, unacknowledged messages, workers, the view buffer.

The queues' lengths and oldest ages come from the collector `/metrics` uses
(`worker.operations.gauges`), the workers from their heartbeats (`worker.operations.heartbeat`),
the buffered views from the sum Redis computes (`worker.operations.backlog`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

import redis

from worker.config import Settings
from worker.operations import backlog, gauges, heartbeat
from worker.operations.fail_fast import redis_client

# kombu's Redis transport keeps every delivered, unacknowledged message in this hash.
UNACKED: Final = "unacked"
UNACKED_SCAN_LIMIT: Final = 10_000  # prefetch x children x workers: far fewer in practice


@dataclass(frozen=True)
class Queue:
    """One queue: messages waiting, the oldest one's age, messages out with a worker."""

    name: str
    waiting: int
    oldest_age_seconds: float
    unacknowledged: int


@dataclass(frozen=True)
class BrokerFigures:
    """Everything read from Redis; `error` says why some of it is missing."""

    queues: list[Queue] = field(default_factory=list)
    workers: list[heartbeat.Beat] = field(default_factory=list)
    buffered_views: int | None = None
    error: str | None = None


class Broker:
    """Reads the figures of the workers of `settings.task_queue` from their Redis."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.task_queue
        self.url = settings.redis_url.get_secret_value()
        self.client = redis_client(self.url)  # a page must not hang on a Redis that is away
        self.collector = gauges.NodeCollector()
        self.watched: tuple[str, ...] = ()

    def read(self) -> BrokerFigures:
        """The figures now; on a Redis error, what was read and the error's class."""
        try:
            workers = heartbeat.online(self.client, self.queue)
            names = sorted({self.queue, *(q for beat in workers for q in beat.queues)})
            queues = self._queues(tuple(names))
            views = backlog.pending_views(self.client, self.queue)
        except (redis.RedisError, OSError) as error:
            return BrokerFigures(error=f"Redis did not answer: {type(error).__name__}")
        return BrokerFigures(queues=queues, workers=workers, buffered_views=views)

    def _queues(self, names: tuple[str, ...]) -> list[Queue]:
        if names != self.watched:
            self.collector.watch(self.url, names, self.queue, lambda: None)
            self.watched = names
        snapshot = self.collector.snapshot()
        if snapshot is None or not snapshot.messages:
            raise redis.ConnectionError("no reading of the queues")
        unacked = self._unacknowledged()
        return [
            Queue(name, snapshot.messages[name], snapshot.oldest_age[name], unacked.get(name, 0))
            for name in names
        ]

    def _unacknowledged(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for seen, (_, entry) in enumerate(self.client.hscan_iter(UNACKED, count=500)):
            if seen >= UNACKED_SCAN_LIMIT:
                break
            try:
                queue = str(json.loads(entry)[2])  # [message, exchange, routing key]
            except (ValueError, IndexError, TypeError):
                continue
            counts[queue] = counts.get(queue, 0) + 1
        return counts

    def close(self) -> None:
        self.client.close()
        if self.collector.redis is not None:
            self.collector.redis.close()
