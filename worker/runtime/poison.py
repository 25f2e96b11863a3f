"""The poison cap: a message whose runs keep dying with their process is dead-lettered.

Counts, per message in Redis, the runs that started and never ended (MAX_DELIVERIES).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache

import redis

from worker.config import Settings, get_settings
from worker.errors import PermanentError
from worker.per_process import PerProcess

log = logging.getLogger(__name__)


class PoisonMessage(PermanentError):
    """A message whose worker process died on every delivery (crash, OOM kill, hard time limit)."""


def delivery_key(queue: str, task_id: str, retries: int) -> str:
    """The Redis key counting unfinished runs of one message (a retry is a new message)."""
    return f"worker:deliveries:{queue}:{task_id}:{retries}"


@dataclass(frozen=True)
class DeliveryCounter:
    """Counts runs that started and never ended, per message, against `limit`."""

    redis_url: str = field(repr=False)
    queue: str
    limit: int
    ttl: int
    # One client per process: a pool child never reuses its parent's sockets.
    _redis: PerProcess[redis.Redis] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        url = self.redis_url
        client = PerProcess(
            lambda: redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        )
        object.__setattr__(self, "_redis", client)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryCounter:
        # Long enough to outlive redeliveries that wait for the visibility timeout.
        ttl = max(86_400, settings.broker_visibility_timeout * (settings.max_deliveries + 1))
        return cls(
            settings.redis_url.get_secret_value(),
            settings.task_queue,
            settings.max_deliveries,
            ttl,
        )

    def start_redelivered_run(self, task_id: str, retries: int) -> int:
        """Count the start of a redelivered message's run; return earlier runs that never ended.

        Only runs that start are counted: a message handed back unstarted (held for its eta, or
        prefetched when its worker shut down) comes back marked redelivered but adds nothing.
        A first delivery costs no round trip; its death is counted by the main process
        (`worker.runtime.request`). If Redis cannot be reached the message is let through (0).
        """
        count = self._add(task_id, retries, 1)
        return 0 if count is None else max(0, count - 1)

    def finish_redelivered_run(self, task_id: str, retries: int) -> None:
        """The run counted by `start_redelivered_run` ended (success, dead letter or retry)."""
        self._add(task_id, retries, -1)

    def record_lost_run(self, task_id: str, retries: int) -> None:
        """A first delivery's run was lost with its process (crash, OOM, hard time limit)."""
        self._add(task_id, retries, 1)

    def poison(self, earlier: int) -> PoisonMessage | None:
        """The error to dead-letter a message with, once `earlier` runs have died."""
        if earlier < self.limit:
            return None
        return PoisonMessage(
            f"delivered {earlier} times without finishing: its worker process died "
            "(crash, OOM kill or hard time limit); not run again"
        )

    def _add(self, task_id: str, retries: int, amount: int) -> int | None:
        key = delivery_key(self.queue, task_id, retries)
        try:
            with self._redis.get().pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, self.ttl)
                count, _ = pipe.execute()
        except redis.RedisError as error:
            log.warning("could not count a delivery of %s: %s", task_id, type(error).__name__)
            return None
        return int(count)


@cache
def delivery_counter() -> DeliveryCounter:
    """This process's counter, from the settings."""
    return DeliveryCounter.from_settings(get_settings())
