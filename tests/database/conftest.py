"""Fixtures for the producer-side tests: a Redis queue of the test's own, a dead broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tests.database.producer import CANARY, Producer
from worker.development import live
from worker.development.processes import free_port
from worker.producer import viewbuffer
from worker.producer.client import TaskClient


def celery_producer(broker_url: str, queue: str) -> Celery:
    """An API service's producer app that fails at once when its broker is down."""
    app = live.producer(broker_url, queue)
    app.conf.broker_connection_retry_on_startup = False
    return app


@pytest.fixture
def producer(live_redis_url: str) -> Iterator[Producer]:
    """Publish for real to the test Redis database, on a queue no worker consumes; the queue,
    its messages and its bindings are gone after the test, whichever process declared it."""
    queue = f"api-test-{uuid.uuid4().hex[:10]}"
    app = celery_producer(live_redis_url, queue)
    try:
        yield Producer(TaskClient(app), live_redis_url, queue)
    finally:
        app.close()
        live.forget_queue(live_redis_url, queue)


@pytest.fixture
def dead_broker_client() -> Iterator[TaskClient]:
    """A client whose Redis is down: nothing listens on its port. Its URL carries a password."""
    app = celery_producer(f"redis://:{CANARY}@127.0.0.1:{free_port()}/0", "unused")
    try:
        yield TaskClient(app)
    finally:
        app.close()


@pytest.fixture
def redis_client(live_redis_url: str) -> Iterator[redis.Redis[Any]]:
    """A client of the test Redis database."""
    client: redis.Redis[Any] = redis.Redis.from_url(live_redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def queue(redis_client: redis.Redis[Any], live_redis_url: str) -> Iterator[str]:
    """A queue name of the test's own, so its keys (view buffer, quarantine) collide with nobody's;
    they are gone after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        live.forget_queue(live_redis_url, name)


@pytest.fixture
def keys(queue: str) -> viewbuffer.BufferKeys:
    """The view buffer's keys of the test's queue."""
    return viewbuffer.buffer_keys(queue)
