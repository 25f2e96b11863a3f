"""The backlog a pool child samples for the gauges, and the return values eager callers see."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from redis import Redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks import maintenance
from tasks.posts import record_view
from worker import ledger
from worker.config import get_settings
from worker.models import Post
from worker.operations import backlog
from worker.producer import viewbuffer


@pytest.fixture
def redis(live_redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(live_redis_url)
    yield client
    client.close()


def test_the_database_counts_are_dead_letters_and_pending_outbox_rows(
    db_session: Session,
) -> None:
    # Given two dead letters, one outbox row sent and two pending, the oldest 90 seconds old
    for task_id in ("dead-1", "dead-2"):
        ledger.record_failure(
            db_session, task_id=task_id, task_name="t", args=[], kwargs={}, error="boom"
        )
    db_session.execute(
        text(
            "INSERT INTO task_outbox (task_id, task_name, created_at, sent_at) VALUES "
            "('sent', 't', now() - interval '1 hour', now()), "
            "('old', 't', now() - interval '90 seconds', NULL), ('new', 't', now(), NULL)"
        )
    )

    # When the sampler counts them
    dead, pending, oldest = backlog.database_counts(db_session)

    # Then it sees what an operator would
    assert (dead, pending) == (2, 2)
    assert oldest is not None
    assert 90 <= oldest < 100


def test_an_empty_outbox_has_no_oldest_row(db_session: Session) -> None:
    assert backlog.database_counts(db_session)[1:] == (0, None)


def test_pending_views_sum_the_pending_hash_and_unflushed_batches(redis: Redis) -> None:
    # Given views buffered, some of them moved aside by a flush that has not applied them yet
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    keys = viewbuffer.buffer_keys(queue)
    try:
        viewbuffer.record_views(redis, {1: 3, 2: 4}, queue=queue)
        viewbuffer.move_aside(redis, keys, viewbuffer.pending_batch_id(redis, keys))
        viewbuffer.record_views(redis, {1: 5}, queue=queue)

        # Then every view not yet applied is counted, summed by Redis
        assert backlog.pending_views(redis, queue) == 12
    finally:
        redis.delete(*redis.keys("views:{" + queue + "}:*"))


def test_the_sampling_task_stores_what_the_main_process_reads(
    eager_tasks: Celery,
    db_session: Session,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a dead letter and a worker whose Redis is the test's
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    ledger.record_failure(db_session, task_id="dead", task_name="t", args=[], kwargs={}, error="x")
    monkeypatch.setattr(viewbuffer, "get_redis", lambda: redis)
    settings = get_settings().model_copy(update={"task_queue": queue})
    monkeypatch.setattr(maintenance, "get_settings", lambda: settings)

    # When beat's sampling task runs
    started = time.time()
    maintenance.sample_metrics.delay()

    # Then the sample is in Redis, as the gauges read it
    stored = backlog.parse(redis.hgetall(backlog.sample_key(queue)))
    redis.delete(backlog.sample_key(queue))
    assert stored is not None
    assert stored.sampled_at >= started
    assert (stored.dead_letters, stored.outbox_pending, stored.outbox_oldest_age_seconds) == (
        1,
        0,
        None,
    )
    assert stored.view_buffer_pending_views == 0


def test_eager_callers_get_the_task_s_own_return_value(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    first = record_view.apply_async(args=[post.id], task_id="twice").get()
    again = record_view.apply_async(args=[post.id], task_id="twice").get()
    assert (first, again) == (1, None)
