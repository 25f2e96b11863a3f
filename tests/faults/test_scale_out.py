"""Fault l: two worker nodes on one queue count 5,000 views exactly."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from tests.faults.scenario import (
    add_posts,
    failures,
    log_count,
    processed,
    send_views,
    total_views,
    views_by_post,
    wait_for_count,
)
from tests.livecelery import LiveStack

pytestmark = pytest.mark.faults

VIEWS = 5000
POSTS = 50


def test_l_two_nodes_on_one_queue_count_5000_views_exactly(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 50 posts and two worker nodes with two children each, consuming one queue
    posts = add_posts(db, POSTS)
    nodes = [stack.start_worker(concurrency=2), stack.start_worker(concurrency=2)]

    # When 5,000 record_view messages are sent, 100 per post, while both nodes compete for them
    started = time.monotonic()
    with stack.producer() as client:
        send_views(stack, client, posts, VIEWS, "l")
    wait_for_count(db, VIEWS, timeout=240)
    elapsed = time.monotonic() - started

    # Then every view was counted exactly once, and both nodes did part of the work
    shares = [log_count(node, r"record_view\[l-\d+\] succeeded") for node in nodes]
    views = total_views(db)
    figure(
        f"FAULT l: {views}/{VIEWS} views on 2 nodes x -c 2 "
        f"(tasks per node {shares[0]}/{shares[1]}), {elapsed:.1f}s, {VIEWS / elapsed:.0f} tasks/s"
    )
    assert views == VIEWS
    assert processed(db) == VIEWS
    assert views_by_post(db) == dict.fromkeys(posts, VIEWS // POSTS)
    assert failures(db) == 0
    assert sum(shares) == VIEWS
    assert all(shares)
