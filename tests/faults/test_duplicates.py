"""Fault b: one task id published five times is applied once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from tests.faults.scenario import RECORD_VIEW, add_posts, log_count, processed, views_by_post
from tests.livecelery import LiveStack, wait_until

pytestmark = pytest.mark.faults


def test_b_one_task_id_published_five_times_is_applied_once(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a post and a worker with two children, so copies can race each other
    post, other = add_posts(db, 2)
    worker = stack.start_worker(concurrency=2)

    # When a producer publishes the same task id five times (a retrying API, a replayed outbox)
    with stack.producer() as client:
        for _ in range(5):
            stack.send(client, RECORD_VIEW, post, task_id="same-id")
        stack.send(client, RECORD_VIEW, other, task_id="after-copies")
    done = r"record_view\[same-id\] succeeded"
    wait_until(lambda: log_count(worker, done) == 5, 60, 0.1, "all five copies to finish")
    wait_until(lambda: processed(db) == 2, 60, 0.1, "the task after the copies")

    # Then the view was counted once and the other four copies were skipped
    views = views_by_post(db)
    skipped = log_count(worker, r"\[same-id\] was already applied; skipping duplicate")
    figure(f"FAULT b: 5 deliveries of one task id -> {views[post]} view applied, {skipped} skipped")
    assert views == {post: 1, other: 1}
    assert processed(db) == 2
    assert skipped == 4
