"""Poison messages: one that keeps killing its pool process is capped by MAX_DELIVERIES."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.livecelery import LiveStack, wait_until
from tests.reliability.crashers import CRASHERS_MODULE, EXIT, EXIT_UNLESS_MARKED, SEGFAULT
from tests.reliability.helpers import add_posts, failure, processed_ids, views

pytestmark = pytest.mark.integration

RECORD_VIEW = "tasks.posts.record_view"


def test_crashing_messages_are_dead_lettered_after_three_deliveries(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a worker that also has the crashing test tasks, and a post
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=1, extra_args=["-I", CRASHERS_MODULE])

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
    log = worker.log()
    assert log.count("an earlier delivery did not finish") == 4  # deliveries 2 and 3, twice
    assert worker.proc.poll() is None


def test_message_that_crashes_once_is_redelivered_and_applied_once(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path
) -> None:
    # Given a message whose first delivery kills its process
    (post,) = add_posts(live_db, 1)
    marker = tmp_path / "let-it-run"
    worker = live_stack.start_worker(concurrency=1, extra_args=["-I", CRASHERS_MODULE])
    with live_stack.producer() as client:
        client.send_task(
            EXIT_UNLESS_MARKED,
            kwargs={"post_id": post, "marker": str(marker)},
            queue=live_stack.queue,
            task_id="crash-once",
        )
    wait_until(lambda: "WorkerLostError" in worker.log(), timeout=60, what="the first crash")

    # When the cause goes away
    marker.touch()

    # Then the redelivered message is applied exactly once and nothing is dead-lettered
    wait_until(lambda: views(live_db, post) == 1, timeout=60, what="the view after the crash")
    assert processed_ids(live_db) == {"crash-once"}
    assert failure(live_db, "crash-once") is None


def test_task_killed_by_the_hard_time_limit_counts_toward_the_cap(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post whose row the test keeps locked, and a worker with a 2 s hard time limit
    locked, free = add_posts(live_db, 2)
    worker = live_stack.start_worker(
        concurrency=1, env={"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "2"}
    )
    with live_db.connect() as holder:
        holder.execute(text("SELECT 1 FROM posts WHERE id = :id FOR UPDATE"), {"id": locked})

        # When a view of the locked post waits on the lock past the hard limit, every delivery
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, locked, task_id="stuck-on-lock")
            live_stack.send(client, RECORD_VIEW, free, task_id="free-post")
        row = wait_until(
            lambda: failure(live_db, "stuck-on-lock"), timeout=120, what="the stuck task capped"
        )
        holder.rollback()

    # Then it was killed three times, dead-lettered, and never applied; the other view was
    assert (row["error_class"], row["attempts"]) == ("PoisonMessage", 3)
    assert worker.log().count("Hard time limit (2") == 3
    wait_until(lambda: views(live_db, free) == 1, timeout=60, what="the free post's view")
    assert views(live_db, locked) == 0
    assert processed_ids(live_db) == {"free-post"}
