"""Connections that fail fast, for the worker's main process (probes, /metrics) and commands.

Short timeouts, no retries, no pool: an outage shows at once instead of hanging a probe or a
scrape, and the main process keeps no connection its pool children could inherit.
"""

from __future__ import annotations

import os
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from worker.config import Settings

# kombu keeps a queue's priorities 3, 6 and 9 in Redis lists of their own, beside the queue's.
PRIORITY_SUFFIXES: Final = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding `queue`'s waiting messages, one per priority."""
    return [queue + suffix for suffix in PRIORITY_SUFFIXES]


def redis_client(url: str, timeout: float = 1.0) -> redis.Redis:
    """A client whose calls fail within `timeout` seconds (redis-py's default retries would hide
    an outage for seconds)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def postgres_engine(settings: Settings, timeout: int, purpose: str = "") -> Engine:
    """An engine without a pool whose connections give up within `timeout` seconds (connect and
    each statement); `purpose` is added to the application_name operators see."""
    name = f"{settings.app_name}{'-' + purpose if purpose else ''}:{os.getpid()}"
    return create_engine(
        settings.sqlalchemy_url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": timeout,  # libpq's smallest is 2
            "application_name": name,
            "options": f"-c statement_timeout={timeout * 1000}",
        },
    )
