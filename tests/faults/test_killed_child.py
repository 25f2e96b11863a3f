"""Fault a: a pool child SIGKILLed while its task waits on a row lock."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from tests.faults.scenario import RECORD_VIEW, add_posts, failures, lock_waiters, views_by_post
from tests.livecelery import LiveStack, wait_until

pytestmark = pytest.mark.faults


def applied(engine: Engine, task_id: str) -> bool:
    with engine.connect() as connection:
        sql = "SELECT count(*) FROM processed_tasks WHERE task_id = :id"
        return bool(connection.scalar(text(sql), {"id": task_id}))


def test_a_child_killed_while_waiting_on_a_row_lock_is_redelivered_and_applied_once(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker, and a post whose row the test keeps locked in its own transaction
    post, other = add_posts(db, 2)
    worker = stack.start_worker(concurrency=2)
    app_name = stack.env["APP_NAME"]
    with db.connect() as locker:
        locker.begin()
        locker.execute(text("SELECT id FROM posts WHERE id = :id FOR UPDATE"), {"id": post})
        with stack.producer() as client:
            stack.send(client, RECORD_VIEW, post, task_id="killed-once")

        # When the child running the task is SIGKILLed while its UPDATE waits on that lock
        victim = min(wait_until(lambda: lock_waiters(db, app_name), 60, 0.05, "a lock waiter"))
        assert victim in worker.children()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # the message comes back (acks_late + reject_on_worker_lost) to another child,
        # which waits on the same lock (or on the dead child's uncommitted ledger row)
        second = wait_until(
            lambda: lock_waiters(db, app_name) - {victim}, 60, 0.05, "the redelivered task"
        )
        redelivered = time.monotonic() - killed
        locker.commit()  # the lock is released; the dead child's backend rolls back

    # Then the task is applied exactly once, and the worker goes on with the next message
    wait_until(lambda: applied(db, "killed-once"), 60, 0.05, "the redelivered task to commit")
    with stack.producer() as client:
        stack.send(client, RECORD_VIEW, other, task_id="after-kill")
    wait_until(lambda: applied(db, "after-kill"), 60, 0.05, "the next task")
    views = views_by_post(db)
    figure(
        f"FAULT a: child {victim} SIGKILLed on a row lock; redelivered to child "
        f"{min(second)} after {redelivered:.1f}s; applied {views[post]}x"
    )
    assert views == {post: 1, other: 1}
    assert failures(db) == 0
    assert victim not in worker.children()
