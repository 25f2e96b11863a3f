"""Counts redeliveries of a message in Redis, so one that keeps killing its worker is capped."""

from __future__ import annotations

import logging
import os

import redis

from worker.config import get_settings
from worker.errors import PermanentError

log = logging.getLogger(__name__)

_clients: dict[int, redis.Redis] = {}


class PoisonMessage(PermanentError):
    """A message whose worker process died on every delivery (crash, OOM kill, hard time limit)."""


def _client() -> redis.Redis:
    # One client per process: a pool child never reuses its parent's sockets.
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        _clients.clear()
        url = get_settings().redis_url.get_secret_value()
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        _clients[pid] = client
    return client


def delivery_key(queue: str, task_id: str, retries: int) -> str:
    """The Redis key counting redeliveries of one message (a retry is a new message)."""
    return f"worker:deliveries:{queue}:{task_id}:{retries}"


def count_redelivery(task_id: str, retries: int) -> int:
    """Count a redelivery of the message; return how many deliveries came before this one.

    Called only for messages the broker marks as redelivered, so the first delivery costs no
    round trip and counts as one. If Redis cannot be reached the message is let through (0).
    """
    settings = get_settings()
    key = delivery_key(settings.task_queue, task_id, retries)
    # Long enough to outlive redeliveries that wait for the visibility timeout.
    ttl = max(86_400, settings.broker_visibility_timeout * (settings.max_deliveries + 1))
    try:
        with _client().pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl)
            count, _ = pipe.execute()
    except redis.RedisError as error:
        log.warning("could not count a redelivery of %s: %s", task_id, type(error).__name__)
        return 0
    return int(count)
