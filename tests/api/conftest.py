"""Fixtures for the producer-side tests: a Redis queue of the test's own, a dead broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from tests.api.helpers import CANARY, Producer, celery_producer
from worker.development.services import free_port
from worker.producer.client import TaskClient


@pytest.fixture
def producer(live_redis_url: str) -> Iterator[Producer]:
    """Publish for real to the test Redis database, on a queue no worker consumes."""
    queue = f"api-test-{uuid.uuid4().hex[:10]}"
    app = celery_producer(live_redis_url, queue)
    try:
        yield Producer(TaskClient(app), live_redis_url, queue)
    finally:
        app.close()
        connection = redis.Redis.from_url(live_redis_url)
        connection.delete(queue)
        connection.close()


@pytest.fixture
def dead_broker_client() -> Iterator[TaskClient]:
    """A client whose Redis is down: nothing listens on its port. Its URL carries a password."""
    app = celery_producer(f"redis://:{CANARY}@127.0.0.1:{free_port()}/0", "unused")
    try:
        yield TaskClient(app)
    finally:
        app.close()


@pytest.fixture
def committed_engine(committed_db_url: URL) -> Iterator[Engine]:
    """An engine on a fresh database where commits are real (for several connections)."""
    engine = create_engine(committed_db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
