"""Fault f: SIGTERM under load, then a new worker: nothing lost, nothing counted twice."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sqlalchemy import Engine

from tests.steps import add_posts, failures, processed, send_views, total_views, views_by_post
from worker.development.live import LiveStack, wait_until

VIEWS = 1000


def test_sigterm_under_load_then_a_new_worker_loses_and_doubles_nothing(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker busy with 1,000 record_view messages
    posts = add_posts(live_db, 10)
    first = live_stack.start_worker(concurrency=2)
    with live_stack.producer() as client:
        send_views(live_stack, client, posts, VIEWS, "f")
    wait_until(lambda: processed(live_db) >= 300, 120, 0.1, "300 views")

    # When it gets SIGTERM (warm shutdown: running tasks finish, prefetched ones go back)
    exit_code = first.stop(timeout=60)
    by_first = processed(live_db)
    # and a new worker takes over the queue
    started = time.monotonic()
    live_stack.start_worker(concurrency=2)
    wait_until(lambda: processed(live_db) == VIEWS, 180, 0.1, "every view")
    took = time.monotonic() - started

    # Then every view is counted exactly once
    views = total_views(live_db)
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
    assert views_by_post(live_db) == dict.fromkeys(posts, VIEWS // 10)
    assert failures(live_db) == {}
