"""Fault a: a pool child SIGKILLed while its task waits on a row lock."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from sqlalchemy import Engine

from tests.steps import (
    RECORD_VIEW,
    add_posts,
    failures,
    lock_waiters,
    processed_ids,
    row_locked,
    views_by_post,
)
from worker.development.live import LiveStack, wait_until


def test_child_killed_on_a_row_lock_is_redelivered_and_applied_once(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker, and a post whose row the test keeps locked in its own transaction
    post, other = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=2)
    app_name = live_stack.env["APP_NAME"]
    with row_locked(live_db, post) as locker:
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, post, task_id="killed-once")

        # When the child running the task is SIGKILLed while its UPDATE waits on that lock
        waiters = wait_until(lambda: lock_waiters(live_db, app_name), 60, 0.05, "a lock waiter")
        victim = min(waiters)
        assert victim in worker.children()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # the message comes back (acks_late + reject_on_worker_lost) to another child,
        # which waits on the same lock (or on the dead child's uncommitted ledger row)
        second = wait_until(
            lambda: lock_waiters(live_db, app_name) - {victim}, 60, 0.05, "the redelivered task"
        )
        redelivered = time.monotonic() - killed
        locker.commit()  # the lock is released; the dead child's backend rolls back

    # Then the task is applied exactly once, and the worker goes on with the next message
    wait_until(lambda: "killed-once" in processed_ids(live_db), 60, 0.05, "the redelivery")
    with live_stack.producer() as client:
        live_stack.send(client, RECORD_VIEW, other, task_id="after-kill")
    wait_until(lambda: "after-kill" in processed_ids(live_db), 60, 0.05, "the next task")
    views = views_by_post(live_db)
    figure(
        f"FAULT a: child {victim} SIGKILLed on a row lock; redelivered to child "
        f"{min(second)} after {redelivered:.1f}s; applied {views[post]}x"
    )
    assert views == {post: 1, other: 1}
    assert failures(live_db) == {}
    assert victim not in worker.children()
