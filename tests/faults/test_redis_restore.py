"""Fault m: Redis restored from a snapshot older than the last view flush."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.posts import flush_view_counts
from tests.steps import use_view_buffer
from worker.development.servers import RedisServer
from worker.models import Post, ProcessedTask
from worker.producer import viewbuffer


@pytest.fixture
def buffer(broker: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis[Any]]:
    """A client on the throwaway Redis, which the flush task uses too."""
    client: redis.Redis[Any] = redis.Redis.from_url(broker.url)
    use_view_buffer(monkeypatch, client, "restored")
    try:
        yield client
    finally:
        client.close()


def test_redis_restored_from_a_snapshot_older_than_a_flush_counts_no_view_twice(
    eager_tasks: Celery,
    db_session: Session,
    make_post: Callable[..., Post],
    broker: RedisServer,
    buffer: redis.Redis[Any],
    caplog: pytest.LogCaptureFixture,
    figure: Callable[[str], None],
) -> None:
    # Given 100 buffered views of a post, saved in an RDB snapshot, then flushed
    post = make_post().id
    for _ in range(100):
        viewbuffer.record_view(buffer, post)
    buffer.save()
    assert flush_view_counts.delay().get() == 100
    # and 5 more views recorded after the snapshot
    for _ in range(5):
        viewbuffer.record_view(buffer, post)

    # When Redis dies and comes back from the snapshot (its pending hash of 100 views is back)
    broker.kill()
    broker.start()
    buffer.connection_pool.disconnect()  # the old sockets point at the dead server
    keys = viewbuffer.buffer_keys()
    assert viewbuffer.pending_views(buffer, keys) == 100
    # and the next flush runs
    with caplog.at_level(logging.INFO, logger="tasks.posts"):
        assert flush_view_counts.delay().get() == 0

    # Then the post keeps its 100 views: the restored copy is dropped with a warning that
    # counts it and says the later views may be lost (they are: they were never saved)
    count = db_session.scalar(select(Post.view_count).where(Post.id == post))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    figure(f"FAULT m: redis restored from a snapshot; post has {count} views (100 flushed)")
    assert count == 100
    assert len(warnings) == 1, warnings
    assert "dropped the 100 views it held" in warnings[0]
    assert "views recorded after that snapshot may be lost" in warnings[0]
    applied = select(func.count()).where(ProcessedTask.task_name == viewbuffer.BATCH_TASK_NAME)
    assert db_session.scalar(applied) == 1
    assert viewbuffer.pending_views(buffer, keys) == 0
    assert buffer.exists(keys.batches) == 0
