"""The soft time limit: the task's transaction is rolled back and the failure recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from tests.livecelery import LiveStack, wait_until
from tests.reliability.helpers import add_posts, failure, processed_ids, views

pytestmark = pytest.mark.integration


def test_soft_time_limit_rolls_back_and_dead_letters(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post the test keeps locked, and a worker with a 1 s soft limit (30 s hard)
    locked, free = add_posts(live_db, 2)
    worker = live_stack.start_worker(
        concurrency=1, env={"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "30"}
    )
    with live_db.connect() as holder:
        holder.execute(text("SELECT 1 FROM posts WHERE id = :id FOR UPDATE"), {"id": locked})
        with live_stack.producer() as client:
            live_stack.send(client, "tasks.posts.record_view", locked, task_id="too-slow")
            live_stack.send(client, "tasks.posts.record_view", free, task_id="next")

        # When the soft limit fires while its UPDATE waits, and the lock is released after it
        wait_until(lambda: "Soft time limit (1s) exceeded" in worker.log(), 30, what="soft limit")
        holder.rollback()

    # Then its writes (ledger claim and view) were rolled back, the failure recorded once,
    # the message acknowledged (not redelivered), and the next task applied
    row = wait_until(lambda: failure(live_db, "too-slow"), 30, what="the dead letter")
    wait_until(lambda: views(live_db, free) == 1, 30, what="the next view")
    assert (row["error_class"], row["attempts"]) == ("SoftTimeLimitExceeded", 1)
    assert views(live_db, locked) == 0
    assert processed_ids(live_db) == {"next"}
    assert "an earlier delivery did not finish" not in worker.log()
