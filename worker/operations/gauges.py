"""The gauges of a worker node, read when scraped: the pool from memory, the rest from Redis.

The queues' lengths and oldest messages, and the backlog a pool child samples from PostgreSQL
(`worker.operations.backlog`), are read from Redis in one round trip, at most once every
CACHE_SECONDS. Registered in `worker.operations.metrics`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from celery.worker import state as celery_state
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.contracts import PUBLISHED_AT_HEADER, SAMPLE_METRICS_INTERVAL, is_timestamp
from worker.operations import backlog, fail_fast

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 5.0


@dataclass
class Snapshot:
    """What Redis said at `taken` (monotonic): per queue, messages and oldest age; the sample."""

    taken: float
    messages: dict[str, int] = field(default_factory=dict)
    oldest_age: dict[str, float] = field(default_factory=dict)
    backlog: backlog.Backlog | None = None


class NodeCollector(Collector):
    """The gauges, read when scraped: the pool from memory, the rest from Redis (cached)."""

    def __init__(self) -> None:
        self.queues: tuple[str, ...] = ()
        self.sample_queue: str | None = None
        self.children: Callable[[], int | None] = lambda: None
        self.redis: redis.Redis | None = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        # Messages without published_at at the ends of the queues: when each was first seen.
        self._seen: dict[str, float] = {}

    def watch(
        self,
        redis_url: str,
        queues: Sequence[str],
        sample_queue: str,
        children: Callable[[], int | None],
    ) -> None:
        """Report these queues, this pool, and the backlog sampled for `sample_queue`."""
        self.queues, self.sample_queue, self.children = tuple(queues), sample_queue, children
        # Short timeouts and no retries: a scrape must not hang on a Redis that is away.
        self.redis = fail_fast.redis_client(redis_url)
        self._snapshot = None

    def describe(self) -> Iterable[Metric]:
        return ()  # read when scraped; nothing to check against other collectors

    def collect(self) -> Iterable[Metric]:
        yield _gauge("worker_active_tasks", "Tasks running in pool children.", None, [
            ((), len(celery_state.active_requests))
        ])  # fmt: skip
        children = self.children()
        if children is not None:
            yield _gauge("worker_children", "Pool child processes.", None, [((), children)])
        snapshot = self.snapshot()
        if snapshot is None:
            return
        yield _gauge(
            "worker_queue_messages",
            "Messages waiting in the queue (Redis), not yet taken by any worker.",
            "queue",
            [((queue,), n) for queue, n in snapshot.messages.items()],
        )
        yield _gauge(
            "worker_queue_oldest_age_seconds",
            "Age of the oldest waiting message, from its published_at header (without one: "
            "since this worker first saw it at an end of the list); 0 when the queue is empty.",
            "queue",
            [((queue,), age) for queue, age in snapshot.oldest_age.items()],
        )
        yield from _backlog_gauges(snapshot.backlog, time.time())

    def snapshot(self) -> Snapshot | None:
        """The latest Redis reading, taken again when older than CACHE_SECONDS."""
        with self._lock:
            now = time.monotonic()
            if self._snapshot is not None and now - self._snapshot.taken < CACHE_SECONDS:
                return self._snapshot
            if self.redis is None:
                return None
            try:
                self._snapshot = self._read(self.redis, now)
            except (redis.RedisError, OSError) as error:
                log.debug("metrics: Redis did not answer (%s)", error)
                self._snapshot = Snapshot(now)  # nothing known: the gauges are left out
            return self._snapshot

    def _read(self, client: redis.Redis, taken: float) -> Snapshot:
        with client.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for key in fail_fast.queue_keys(queue):
                    pipe.llen(key)
                    # kombu pushes new messages on the left and takes from the right; it puts
                    # a rejected one back on the left. Both ends are read: the next message
                    # and the last one put back. A message put back while others were being
                    # published sits between them, unseen until it reaches an end.
                    pipe.lindex(key, -1)
                    pipe.lindex(key, 0)
            if self.sample_queue is not None:
                pipe.hgetall(backlog.sample_key(self.sample_queue))
            replies = pipe.execute()
        snapshot = Snapshot(taken)
        wall, seen = time.time(), dict[str, float]()
        at = 0
        for queue in self.queues:
            total, ages = 0, [0.0]
            for _ in fail_fast.PRIORITY_SUFFIXES:
                length, ends = replies[at], replies[at + 1 : at + 3]
                at += 3
                total += int(length)
                ages += [self._age(raw, wall, seen) for raw in ends if raw is not None]
            snapshot.messages[queue], snapshot.oldest_age[queue] = total, max(ages)
        self._seen = seen
        if self.sample_queue is not None:
            snapshot.backlog = backlog.parse(replies[at])
        return snapshot

    def _age(self, raw: bytes, now: float, seen: dict[str, float]) -> float:
        headers = _headers(raw)
        published_at = headers.get(PUBLISHED_AT_HEADER)
        if is_timestamp(published_at):
            return max(0.0, now - float(published_at))
        # A raw producer's message: since this worker first saw it at an end, a lower bound.
        message_id = str(headers.get("id"))
        first = seen[message_id] = self._seen.get(message_id, now)
        return now - first


def _headers(raw: bytes) -> dict[str, Any]:
    try:
        headers = json.loads(raw).get("headers")
    except (ValueError, AttributeError, RecursionError):
        return {}
    return headers if isinstance(headers, dict) else {}


def _gauge(
    name: str,
    documentation: str,
    label: str | None,
    values: Iterable[tuple[tuple[str, ...], float]],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label] if label else [])
    for labels, value in values:
        family.add_metric(list(labels), value)
    return family


def _backlog_gauges(sample: backlog.Backlog | None, now: float) -> Iterable[Metric]:
    if sample is None:
        return
    how = (
        f" Sampled every {SAMPLE_METRICS_INTERVAL:.0f} s by a pool child "
        "(tasks.maintenance.sample_metrics)."
    )
    age = sample.age(now) if sample.outbox_pending else 0.0
    figures = (
        ("worker_dead_letters", "Dead letters kept in task_failures.", sample.dead_letters),
        ("worker_outbox_pending", "Outbox rows not yet published.", sample.outbox_pending),
        (
            "worker_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet published; 0 when none waits.",
            None if sample.outbox_pending is None else age,
        ),
        (
            "worker_view_buffer_pending_views",
            "Views buffered in Redis and not yet added to posts.",
            sample.view_buffer_pending_views,
        ),
    )
    for name, documentation, value in figures:
        if value is not None:
            yield _gauge(name, documentation + how, None, [((), value)])
