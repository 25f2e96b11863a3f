"""Fault e: Redis restarted under a running worker, which reconnects by itself."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine

from tests.steps import add_posts, processed, send_views, total_views
from worker.development.live import LiveStack, wait_until
from worker.development.servers import RedisServer

RECONNECT_DEADLINE = 15.0  # seconds: the promise of issue #3, section 2
NEW_TASKS = 20


def test_redis_restart_under_a_running_worker_then_new_tasks_are_applied_within_15s(
    stack: LiveStack, broker: RedisServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker that has processed a task
    posts = add_posts(db, 2)
    worker = stack.start_worker(concurrency=2)
    with stack.producer() as client:
        send_views(stack, client, posts, 1, "before")
    wait_until(lambda: processed(db) == 1, 60, 0.05, "the first task")

    # When Redis restarts (nothing on disk: whatever was queued at that moment is gone)
    broker.restart()
    restarted = time.monotonic()
    # and a producer sends new tasks right after
    with stack.producer() as client:
        send_views(stack, client, posts, NEW_TASKS, "after")

    # Then the worker reconnects by itself and applies all of them within 15 seconds
    # (polled by hand rather than with wait_until, to report the figure even on failure)
    while processed(db) < 1 + NEW_TASKS and time.monotonic() - restarted < RECONNECT_DEADLINE:
        time.sleep(0.05)
    took = time.monotonic() - restarted
    done = processed(db) - 1
    figure(
        f"FAULT e: redis restart; {done}/{NEW_TASKS} new tasks applied {took:.1f}s after it "
        f"(deadline {RECONNECT_DEADLINE:.0f}s), worker pid {worker.pid} never restarted"
    )
    assert done == NEW_TASKS, f"only {done}/{NEW_TASKS} new tasks after {took:.1f}s"
    assert total_views(db) == 1 + NEW_TASKS
    assert worker.running()
