"""A message that kills its pool process: dead-lettered after MAX_DELIVERIES; a single death is not.

The hard time limit kills the child for real (SIGTERM, then SIGKILL from the pool); the crashing
test tasks (`tests.faults.crashers`) exit or segfault their process themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from tests.faults.crashers import CRASHERS_MODULE, EXIT, EXIT_ONCE, SEGFAULT
from tests.steps import (
    RECORD_VIEW,
    add_posts,
    failure,
    lock_waiters,
    log_count,
    processed_ids,
    row_locked,
    views,
    views_by_post,
)
from worker.development.live import LiveStack, wait_until

# A view of a locked post blocks inside libpq, where the soft limit's exception cannot be
# raised, so only the hard limit's kill ends it.
LIMITS = {"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "2", "MAX_DELIVERIES": "3"}


def test_child_killed_by_the_hard_time_limit_three_times_is_dead_lettered(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a one-child worker with a 2 s hard time limit, and a post the test keeps locked
    locked, free = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=1, env=LIMITS)
    first_child = worker.children()
    started = time.monotonic()
    with row_locked(live_db, locked) as locker:
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, locked, task_id="poison")
            live_stack.send(client, RECORD_VIEW, free, task_id="after-poison")

        # When every delivery of the view of the locked post is killed by the hard limit
        letter = wait_until(lambda: failure(live_db, "poison"), 120, 0.1, "the dead letter")
        took = time.monotonic() - started
        locker.rollback()

    # Then it was dead-lettered instead of being run a fourth time, and the worker went on
    wait_until(lambda: views(live_db, free) == 1, 60, 0.1, "the next view")
    # (the killed children's backends give up their uncommitted work once the lock is free)
    app_name = live_stack.env["APP_NAME"]
    wait_until(lambda: not lock_waiters(live_db, app_name), 60, 0.1, "orphaned backends to end")
    kills = log_count(worker, r"Hard time limit \(2s\) exceeded for [\w.]+\[poison\]")
    figure(
        f"FAULT h: {kills} hard-limit kills of one message, then dead-lettered as "
        f"{letter['error_class']} (attempts={letter['attempts']}) after {took:.1f}s; poisoned "
        f"post {views(live_db, locked)} views, next task applied ({views(live_db, free)} view)"
    )
    assert kills == 3
    assert (letter["error_class"], letter["attempts"]) == ("PoisonMessage", 3)
    assert views_by_post(live_db) == {locked: 0, free: 1}
    assert processed_ids(live_db) == {"after-poison"}
    assert worker.running()
    assert worker.children().isdisjoint(first_child)


def test_child_that_exits_or_segfaults_three_times_is_dead_lettered(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a worker with two children that also has the crashing test tasks, and a post
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=2, extra_args=["-I", CRASHERS_MODULE])

    # When a message that exits its process and one that segfaults it are sent, then a good one
    with live_stack.producer() as client:
        live_stack.send(client, EXIT, task_id="poison-exit")
        live_stack.send(client, SEGFAULT, task_id="poison-segv")
        live_stack.send(client, RECORD_VIEW, post, task_id="good-after-poison")

    # Then each is dead-lettered once it has killed its process three times
    both = wait_until(
        lambda: (
            (a := failure(live_db, "poison-exit"))
            and (b := failure(live_db, "poison-segv"))
            and (a, b)
        ),
        timeout=120,
        what="both poison messages dead-lettered",
    )
    for row, name in zip(both, (EXIT, SEGFAULT), strict=True):
        assert (row["task_name"], row["error_class"], row["attempts"]) == (
            name,
            "PoisonMessage",
            3,
        )
        assert "worker process died" in row["error_message"]
    # And the worker kept working: the good message was applied, once
    wait_until(lambda: views(live_db, post) == 1, timeout=60, what="the good view")
    assert processed_ids(live_db) == {"good-after-poison"}
    # (deliveries 2 and 3 of each say the earlier one died)
    assert worker.log().count("an earlier delivery did not finish") == 4
    assert worker.running()


def test_child_that_dies_once_is_redelivered_and_applied_once(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path
) -> None:
    # Given a worker with the crashing test tasks, and a post
    (post,) = add_posts(live_db, 1)
    marker = tmp_path / "died-once"
    worker = live_stack.start_worker(concurrency=1, extra_args=["-I", CRASHERS_MODULE])

    # When a message that kills its process on its first delivery is sent
    with live_stack.producer() as client:
        client.send_task(
            EXIT_ONCE,
            kwargs={"post_id": post, "marker": str(marker)},
            queue=live_stack.queue,
            task_id="crash-once",
        )

    # Then it is redelivered and applied exactly once, and nothing is dead-lettered
    wait_until(lambda: views(live_db, post) == 1, timeout=60, what="the view after the crash")
    assert marker.exists()
    assert "WorkerLostError" in worker.log()
    assert processed_ids(live_db) == {"crash-once"}
    assert failure(live_db, "crash-once") is None
