"""The client's buffered view counter, flushed by the worker's task, against real Redis.

On the test Redis database and a queue of the test's own, never the buffer of the configured
REDIS_URL: a flush here would otherwise move a developer's buffered views into the test database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.posts import flush_view_counts
from tests.conftest import TEST_REDIS_DB
from tests.steps import use_view_buffer
from worker.models import Post
from worker.producer import viewbuffer
from worker.producer.client import views


@pytest.fixture
def test_buffer(
    live_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[viewbuffer.BufferKeys]:
    """The buffer of a queue of the test's own on the test Redis database, for the client's
    process-wide counter and the flush task alike."""
    client = redis.Redis.from_url(live_redis_url)
    try:
        yield use_view_buffer(monkeypatch, client, f"test-views-{uuid.uuid4().hex[:8]}")
    finally:
        client.close()


def test_buffered_views_are_counted_once_by_the_flush(
    eager_tasks: Celery,
    db_session: Session,
    make_post: Callable[..., Post],
    test_buffer: viewbuffer.BufferKeys,
) -> None:
    # Given two posts, and the process-wide counter on an empty buffer of the test's own
    first, second = make_post(), make_post()

    # When an API process counts views through the client
    for _ in range(3):
        views.record_view(first.id)
    views.record_views({first.id: 2, second.id: 40})

    # Then nothing reaches PostgreSQL until the flush, which adds each view once
    counts = select(Post.id, Post.view_count).where(Post.id.in_([first.id, second.id]))
    assert dict(db_session.execute(counts).all()) == {first.id: 0, second.id: 0}
    assert flush_view_counts.delay().get() == 45
    assert flush_view_counts.delay().get() == 0
    assert dict(db_session.execute(counts).all()) == {first.id: 5, second.id: 40}
    buffer = viewbuffer.get_redis()
    assert buffer.connection_pool.connection_kwargs["db"] == TEST_REDIS_DB
    assert viewbuffer.pending_views(buffer, test_buffer) == 0
