"""The client's buffered view counter, flushed by the worker's task, against real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.posts import flush_view_counts
from worker.contracts import InvalidTaskArguments
from worker.models import Post
from worker.producer.client import ViewCounter, views


def test_buffered_views_are_counted_once_by_the_flush(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    # Given an empty buffer (anything left by earlier runs is flushed first)
    flush_view_counts.delay()
    first, second = make_post(), make_post()

    # When an API process counts views through the client
    for _ in range(3):
        views.record_view(first.id)
    views.record_views({first.id: 2, second.id: 40})

    # Then nothing reaches PostgreSQL until the flush, which adds each view once
    counts = select(Post.id, Post.view_count).where(Post.id.in_([first.id, second.id]))
    assert dict(db_session.execute(counts).all()) == {first.id: 0, second.id: 0}
    flush_view_counts.delay()
    flush_view_counts.delay()
    assert dict(db_session.execute(counts).all()) == {first.id: 5, second.id: 40}


@pytest.mark.parametrize("bad", [0, -1, "7", True, 1.5, None])
def test_bad_post_ids_are_refused_before_reaching_redis(fake_redis: object, bad: object) -> None:
    counter = ViewCounter(redis=fake_redis)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskArguments, match="post"):
        counter.record_view(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskArguments, match="post"):
        counter.record_views({bad: 1})  # type: ignore[dict-item]
    assert fake_redis.keys() == []  # type: ignore[attr-defined]
