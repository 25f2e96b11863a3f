"""Fault g: a soft time limit that fires mid-transaction leaves no partial write."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from tests.faults.scenario import RECORD_VIEW, add_posts, lock_waiters, log_count, views_by_post
from tests.livecelery import LiveStack, wait_until

pytestmark = pytest.mark.faults

SOFT_LIMIT = 2  # seconds; the hard limit stays far away so only the soft one fires
LIMITS = {"TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT), "TASK_TIME_LIMIT": "60"}


def ids(engine: Engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text(f"SELECT task_id FROM {table}")))


def test_g_soft_time_limit_mid_transaction_rolls_back_and_records_the_failure(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker with a 2 s soft time limit, and a post the test keeps locked
    post, other = add_posts(db, 2)
    worker = stack.start_worker(concurrency=1, env=LIMITS)
    with db.connect() as locker:
        locker.begin()
        locker.execute(text("SELECT id FROM posts WHERE id = :id FOR UPDATE"), {"id": post})
        with stack.producer() as client:
            stack.send(client, RECORD_VIEW, post, task_id="too-slow")
        # When the task has claimed its ledger row and waits on the lock past the soft limit
        wait_until(lambda: lock_waiters(db, stack.env["APP_NAME"]), 60, 0.05, "the lock wait")
        started = time.monotonic()
        fired = r"Soft time limit \(2s\) exceeded for tasks\.posts\.record_view\[too-slow\]"
        wait_until(lambda: log_count(worker, fired), 60, 0.05, "the soft time limit")
        waited = time.monotonic() - started
        locker.commit()  # the UPDATE returns and the pending SoftTimeLimitExceeded is raised

    # Then nothing of the task was written, and its failure is recorded once
    wait_until(lambda: "too-slow" in ids(db, "task_failures"), 60, 0.05, "the dead letter")
    with db.connect() as connection:
        error_class, attempts = connection.execute(
            text("SELECT error_class, attempts FROM task_failures WHERE task_id = 'too-slow'")
        ).one()
    # And the worker goes on with the next message
    with stack.producer() as client:
        stack.send(client, RECORD_VIEW, other, task_id="next")
    wait_until(lambda: "next" in ids(db, "processed_tasks"), 60, 0.05, "the next task")
    views = views_by_post(db)
    figure(
        f"FAULT g: soft limit {SOFT_LIMIT}s fired {waited:.1f}s into a lock wait; views "
        f"{views[post]}, ledger rows {len(ids(db, 'processed_tasks') & {'too-slow'})}, "
        f"dead letter {error_class} attempts={attempts}; next task applied"
    )
    assert views == {post: 0, other: 1}
    assert ids(db, "processed_tasks") == {"next"}
    assert (error_class, attempts) == ("SoftTimeLimitExceeded", 1)
