"""Counts runs that started and never ended, in Redis, so a message that keeps killing its worker
is capped (MAX_DELIVERIES)."""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request

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


def _ttl() -> int:
    settings = get_settings()
    # Long enough to outlive redeliveries that wait for the visibility timeout.
    return max(86_400, settings.broker_visibility_timeout * (settings.max_deliveries + 1))


def _add(task_id: str, retries: int, amount: int) -> int | None:
    key = delivery_key(get_settings().task_queue, task_id, retries)
    try:
        with _client().pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, _ttl())
            count, _ = pipe.execute()
    except redis.RedisError as error:
        log.warning("could not count a delivery of %s: %s", task_id, type(error).__name__)
        return None
    return int(count)


def start_redelivered_run(task_id: str, retries: int) -> int:
    """Count the start of a redelivered message's run; return the earlier runs that never ended.

    Only runs that start are counted: a message handed back unstarted (held for its eta, or
    prefetched when its worker shut down) comes back marked redelivered but adds nothing.
    A first delivery costs no round trip; its death is counted by the main process
    (`DatabaseRequest`). If Redis cannot be reached the message is let through (0).
    """
    count = _add(task_id, retries, 1)
    return 0 if count is None else max(0, count - 1)


def finish_redelivered_run(task_id: str, retries: int) -> None:
    """The run counted by `start_redelivered_run` ended (success, dead letter or retry)."""
    _add(task_id, retries, -1)


def record_lost_run(task_id: str, retries: int) -> None:
    """A first delivery's run was lost with its process (crash, OOM kill, hard time limit)."""
    _add(task_id, retries, 1)


class DatabaseRequest(Request):
    """Celery's request, in the worker's main process: counts first-delivery runs that died.

    Set as `DatabaseTask.Request`. A redelivered run counts itself when it starts (in the child),
    so only a message that was not redelivered is counted here.
    """

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        error = exc_info.exception
        error = error.exc if isinstance(error, ExceptionWithTraceback) else error
        lost = isinstance(error, WorkerLostError | TimeLimitExceeded) or (
            isinstance(error, SystemExit | KeyboardInterrupt)
            and not (
                getattr(self, "_already_cancelled", False)
                or getattr(self, "_already_revoked", False)
            )
        )
        if lost and self.id and not (self.delivery_info or {}).get("redelivered"):
            record_lost_run(self.id, self.request_dict.get("retries") or 0)
        return super().on_failure(exc_info, send_failed_event, return_ok)
