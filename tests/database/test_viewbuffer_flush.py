"""Buffered views applied: the set-based apply, and the eager flush task, once per batch.

A flusher killed between its commit and its cleanup is a fault test
(tests/faults/test_killed_runs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.posts import flush_view_counts
from tests.steps import use_view_buffer
from worker import ledger
from worker.domain import posts
from worker.models import Post, ProcessedTask
from worker.producer import viewbuffer


def view_counts(session: Session) -> dict[int, int]:
    return {row.id: row.view_count for row in session.execute(select(Post.id, Post.view_count))}


def applied_batches(session: Session) -> int:
    query = select(ProcessedTask.task_id).where(
        ProcessedTask.task_name == viewbuffer.BATCH_TASK_NAME
    )
    return len(session.scalars(query).all())


def test_add_view_counts_applies_chunks_and_drops_missing_posts(
    db_session: Session, make_post: Callable[..., Post]
) -> None:
    post_ids = [make_post().id for _ in range(5)]
    missing = max(post_ids) + 1000
    counts = {post_ids[0]: 3, post_ids[1]: 1, post_ids[3]: 10, post_ids[4]: 2, missing: 7}

    added = posts.add_view_counts(db_session, counts, chunk_size=2)

    assert added == posts.AddedViews(posts=4, views=16, missing_posts=1, dropped_views=7)
    assert view_counts(db_session) == {
        post_ids[0]: 3,
        post_ids[1]: 1,
        post_ids[2]: 0,
        post_ids[3]: 10,
        post_ids[4]: 2,
    }


@dataclass
class FlushedBuffer:
    """The buffer the eager flush task reads: the test's own Redis database and queue."""

    redis: redis.Redis[Any]
    queue: str
    keys: viewbuffer.BufferKeys

    def record(self, counts: dict[int, int]) -> None:
        viewbuffer.record_views(self.redis, counts, queue=self.queue)

    def is_empty(self) -> bool:
        pending = viewbuffer.pending_views(self.redis, self.keys)
        return pending == 0 and self.redis.exists(self.keys.batches) == 0


@pytest.fixture
def buffer(
    eager_tasks: Celery,
    redis_client: redis.Redis[Any],
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> FlushedBuffer:
    return FlushedBuffer(redis_client, queue, use_view_buffer(monkeypatch, redis_client, queue))


def applied_by_another_flush(session: Session, batch_id: str, counts: dict[int, int]) -> None:
    """Claim `batch_id` and add its views, as a flush in another transaction would."""
    with session.begin_nested():
        assert ledger.claim(session, batch_id, viewbuffer.BATCH_TASK_NAME)
        posts.add_view_counts(session, counts, chunk_size=100)


def test_flush_task_adds_buffered_views_once_and_logs_dropped_ones(
    db_session: Session,
    make_post: Callable[..., Post],
    buffer: FlushedBuffer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given views buffered for two posts and for one that does not exist
    first, second = make_post().id, make_post().id
    for _ in range(4):
        viewbuffer.record_view(buffer.redis, first, queue=buffer.queue)
    buffer.record({second: 6, 999_999: 5})

    # When beat's flush task runs twice
    with caplog.at_level(logging.INFO, logger="tasks.posts"):
        assert flush_view_counts.delay().get() == 10
        assert flush_view_counts.delay().get() == 0

    # Then the views are in the posts, the batch is in the ledger, and Redis is empty
    assert view_counts(db_session) == {first: 4, second: 6}
    assert applied_batches(db_session) == 1
    assert buffer.is_empty()
    assert "dropped 5 views of 1 posts that no longer exist" in caplog.text


def test_a_batch_another_flush_moved_and_applied_meanwhile_is_not_taken_for_a_restore(
    db_session: Session,
    make_post: Callable[..., Post],
    buffer: FlushedBuffer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a flush that reads the pending id just before another flush moves that hash aside
    # and commits it (so the ledger holds the id by the time the first one checks)
    post = make_post().id
    buffer.record({post: 5})
    read = viewbuffer.pending_batch_id

    def read_then_another_flush_applies(
        client: redis.Redis[Any], keys: viewbuffer.BufferKeys
    ) -> str | None:
        batch_id = read(client, keys)
        assert batch_id is not None
        viewbuffer.move_aside(client, keys, batch_id)
        applied_by_another_flush(db_session, batch_id, {post: 5})
        return batch_id

    monkeypatch.setattr(viewbuffer, "pending_batch_id", read_then_another_flush_applies)

    # When the first flush carries on
    with caplog.at_level(logging.INFO, logger="tasks.posts"):
        assert flush_view_counts.delay().get() == 0

    # Then the views count once, and the batch is cleaned up as applied, without a warning
    assert view_counts(db_session) == {post: 5}
    assert "was already applied; removed it from Redis" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert viewbuffer.pending_views(buffer.redis, buffer.keys) == 0


def test_flush_applies_a_pending_hash_of_an_older_producer(
    db_session: Session, make_post: Callable[..., Post], buffer: FlushedBuffer
) -> None:
    # Given views buffered by a producer that knew nothing of batch ids
    post = make_post().id
    buffer.redis.hincrby(buffer.keys.pending, str(post), 3)

    # When the flush runs
    assert flush_view_counts.delay().get() == 3

    # Then they are counted under an id given at move-aside, and Redis is empty
    assert view_counts(db_session) == {post: 3}
    assert applied_batches(db_session) == 1
    assert buffer.is_empty()


@pytest.mark.parametrize(
    ("applied_before", "level", "message"),
    [
        (True, logging.INFO, "was already applied; another flush removed it"),
        (False, logging.WARNING, "vanished from Redis before it was applied: its views are lost"),
    ],
    ids=["applied", "lost"],
)
def test_a_registered_batch_whose_hash_vanished_is_reported_once_as_applied_or_lost(
    db_session: Session,
    make_post: Callable[..., Post],
    buffer: FlushedBuffer,
    caplog: pytest.LogCaptureFixture,
    applied_before: bool,
    level: int,
    message: str,
) -> None:
    # Given a registered batch whose hash is gone from Redis (applied or not)
    post = make_post().id
    buffer.record({post: 4})
    pending = viewbuffer.pending_batch_id(buffer.redis, buffer.keys)
    (batch_id,) = viewbuffer.move_aside(buffer.redis, buffer.keys, pending).batch_ids
    if applied_before:
        applied_by_another_flush(db_session, batch_id, {post: 4})
    buffer.redis.delete(buffer.keys.batch(batch_id))

    # When the flush runs twice
    with caplog.at_level(logging.INFO, logger="tasks.posts"):
        assert flush_view_counts.delay().get() == 0
        assert flush_view_counts.delay().get() == 0

    # Then it is reported once, at the level its fate deserves, and unregistered
    reports = [r for r in caplog.records if batch_id in r.getMessage()]
    assert [(r.levelno, message in r.getMessage()) for r in reports] == [(level, True)]
    assert buffer.redis.exists(buffer.keys.batches) == 0
    assert view_counts(db_session) == {post: 4 if applied_before else 0}
    assert applied_batches(db_session) == (1 if applied_before else 0)
