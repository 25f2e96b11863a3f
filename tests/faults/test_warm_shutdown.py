"""Fault f: SIGTERM under load, then a new worker: nothing lost, nothing counted twice."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from tests.faults.scenario import (
    add_posts,
    failures,
    processed,
    send_views,
    total_views,
    views_by_post,
    wait_for_count,
)
from tests.livecelery import LiveStack

pytestmark = pytest.mark.faults

VIEWS = 1000


def test_f_sigterm_under_load_then_a_new_worker_loses_and_doubles_nothing(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker busy with 1,000 record_view messages
    posts = add_posts(db, 10)
    first = stack.start_worker(concurrency=2)
    with stack.producer() as client:
        send_views(stack, client, posts, VIEWS, "f")
    wait_for_count(db, 300, timeout=120)

    # When it gets SIGTERM (warm shutdown: running tasks finish, prefetched ones go back)
    exit_code = first.stop(timeout=60)
    by_first = processed(db)
    # and a new worker takes over the queue
    stack.start_worker(concurrency=2)
    took = wait_for_count(db, VIEWS, timeout=180)

    # Then every view is counted exactly once
    views = total_views(db)
    handed_back = re.findall(r"Restoring (\d+) unacknowledged message", first.log())
    restored = sum(map(int, handed_back))
    figure(
        f"FAULT f: {views}/{VIEWS} views, SIGTERM after {by_first} (exit {exit_code}, "
        f"{restored} prefetched message(s) handed back), new worker applied the other "
        f"{VIEWS - by_first} in {took:.1f}s"
    )
    assert exit_code == 0
    assert by_first < VIEWS
    assert views == VIEWS
    assert processed(db) == VIEWS
    assert views_by_post(db) == dict.fromkeys(posts, VIEWS // 10)
    assert failures(db) == 0
