"""Workers online: each worker's main process sends a heartbeat to Redis; the dashboard reads it.

A thread of the main process writes, every INTERVAL seconds, the node's name, pid, queues, pool
children, busy children and probes port to a key of its own that expires after TTL, and marks
the node in a sorted set by time: a node that stops beating (killed, frozen, cut off) leaves
the list within TTL, one that shuts down warm leaves it at once. The keys carry the task
queue's hash tag, as the view buffer's and the backlog sample's do.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import redis
from celery.worker import state as celery_state

from worker.config import Settings
from worker.operations.fail_fast import redis_client

log = logging.getLogger(__name__)

INTERVAL: Final = 5.0
TTL: Final = 3 * INTERVAL


@dataclass(frozen=True)
class Beat:
    """What one worker node said of itself at `last_seen` (epoch seconds)."""

    node: str
    pid: int
    queues: tuple[str, ...]
    children: int | None
    busy: int
    http_port: int
    started: float
    last_seen: float


def nodes_key(queue: str) -> str:
    """The sorted set of the nodes of `queue`'s workers, scored by when each was last seen."""
    return "workers:{" + queue + "}:nodes"


def beat_key(queue: str, node: str) -> str:
    """The latest heartbeat of `node`, a JSON object that expires after TTL."""
    return "workers:{" + queue + "}:beat:" + node


def publish(client: redis.Redis, queue: str, beat: Beat) -> None:
    """Store `beat` as its node's latest, in one round trip, forgetting nodes gone for TTL."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(beat_key(queue, beat.node), json.dumps(asdict(beat)), ex=int(TTL))
        pipe.zadd(nodes_key(queue), {beat.node: beat.last_seen})
        pipe.zremrangebyscore(nodes_key(queue), "-inf", beat.last_seen - TTL)
        pipe.expire(nodes_key(queue), int(TTL))
        pipe.execute()


def forget(client: redis.Redis, queue: str, node: str) -> None:
    """`node` is going away: take it off the list now rather than after TTL."""
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(beat_key(queue, node))
        pipe.zrem(nodes_key(queue), node)
        pipe.execute()


def online(client: redis.Redis, queue: str, now: float | None = None) -> list[Beat]:
    """The nodes of `queue` seen within TTL, by name."""
    now = time.time() if now is None else now
    members = client.zrangebyscore(nodes_key(queue), now - TTL, "+inf")
    nodes = [n.decode() if isinstance(n, bytes) else str(n) for n in members]
    if not nodes:
        return []
    beats = [_parse(raw) for raw in client.mget([beat_key(queue, node) for node in nodes])]
    return sorted((beat for beat in beats if beat is not None), key=lambda beat: beat.node)


def _parse(raw: bytes | str | None) -> Beat | None:
    if raw is None:
        return None
    try:
        fields: dict[str, Any] = json.loads(raw)
        fields["queues"] = tuple(fields["queues"])
        return Beat(**fields)
    except (ValueError, TypeError, KeyError):
        return None


class Heartbeat(threading.Thread):
    """Publishes this node's beat every INTERVAL seconds until stopped, then forgets it."""

    def __init__(self, client: redis.Redis, queue: str, describe: Callable[[], Beat]) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.client, self.queue, self.describe = client, queue, describe
        self.stopping = threading.Event()

    def run(self) -> None:
        node = ""
        while not self.stopping.is_set():
            try:
                beat = self.describe()
                node = beat.node
                publish(self.client, self.queue, beat)
            except (redis.RedisError, OSError) as error:
                # /readyz reports Redis outages; a heartbeat missed is the dashboard's sign.
                log.debug("heartbeat: Redis did not answer (%s)", error)
            self.stopping.wait(INTERVAL)
        if node:
            try:
                forget(self.client, self.queue, node)
            except (redis.RedisError, OSError) as error:
                log.debug("heartbeat: could not forget %s (%s)", node, error)


_running: Heartbeat | None = None


def start(settings: Settings, node: str, queues: Sequence[str], pool: Any) -> Heartbeat:
    """Beat for this worker (its main process), from now until `stop()`; once per process."""
    global _running
    if _running is not None and _running.is_alive():
        return _running  # the consumer is ready again after a reconnect: still beating
    client = redis_client(settings.redis_url.get_secret_value())
    started, pid = time.time(), os.getpid()

    def describe() -> Beat:
        processes = getattr(getattr(pool, "_pool", None), "_pool", None)
        return Beat(
            node=node,
            pid=pid,
            queues=tuple(queues),
            children=len(processes) if isinstance(processes, list) else None,
            busy=len(celery_state.active_requests),
            http_port=settings.worker_http_port,
            started=started,
            last_seen=time.time(),
        )

    _running = Heartbeat(client, settings.task_queue, describe)
    _running.start()
    return _running


def stop(timeout: float | None = None) -> None:
    """Stop beating and take this node off the list (a warm shutdown began).

    Called from a signal handler: it waits for the thread only when given a `timeout`.
    """
    global _running
    if _running is not None:
        _running.stopping.set()
        if timeout is not None:
            _running.join(timeout)
        _running = None
