"""Fault g: a soft time limit that fires mid-transaction leaves no partial write."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine

from tests.steps import (
    RECORD_VIEW,
    add_posts,
    failure,
    lock_waiters,
    log_count,
    processed_ids,
    row_locked,
    views_by_post,
)
from worker.development.live import LiveStack, wait_until

SOFT_LIMIT = 2  # seconds; the hard limit stays far away so only the soft one fires
LIMITS = {"TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT), "TASK_TIME_LIMIT": "60"}


def test_soft_time_limit_mid_transaction_rolls_back_and_dead_letters_once(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker with a 2 s soft time limit, and a post the test keeps locked
    locked, free = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=1, env=LIMITS)
    with row_locked(live_db, locked) as locker:
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, locked, task_id="too-slow")
            live_stack.send(client, RECORD_VIEW, free, task_id="next")

        # When the task has claimed its ledger row and waits on the lock past the soft limit
        app_name = live_stack.env["APP_NAME"]
        wait_until(lambda: lock_waiters(live_db, app_name), 60, 0.05, "the lock wait")
        started = time.monotonic()
        fired = r"Soft time limit \(2s\) exceeded for tasks\.posts\.record_view\[too-slow\]"
        wait_until(lambda: log_count(worker, fired), 60, 0.05, "the soft time limit")
        waited = time.monotonic() - started
        locker.rollback()  # the UPDATE returns and the pending SoftTimeLimitExceeded is raised

    # Then its writes (ledger claim and view) were rolled back, the failure recorded once,
    # the message acknowledged (not redelivered), and the next task applied
    letter = wait_until(lambda: failure(live_db, "too-slow"), 60, 0.05, "the dead letter")
    wait_until(lambda: views_by_post(live_db)[free] == 1, 60, 0.05, "the next view")
    figure(
        f"FAULT g: soft limit {SOFT_LIMIT}s fired {waited:.1f}s into a lock wait; views "
        f"{views_by_post(live_db)[locked]}, dead letter {letter['error_class']} "
        f"attempts={letter['attempts']}; next task applied"
    )
    assert views_by_post(live_db) == {locked: 0, free: 1}
    assert processed_ids(live_db) == {"next"}
    assert (letter["error_class"], letter["attempts"]) == ("SoftTimeLimitExceeded", 1)
    assert "an earlier delivery did not finish" not in worker.log()
