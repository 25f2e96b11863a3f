"""A transient database error that never goes away: retried with backoff, then dead-lettered."""

from __future__ import annotations

from sqlalchemy import Engine

from tests.steps import RECORD_VIEW, add_posts, failure, log_count, processed_ids, row_locked, views
from worker.development.live import LiveStack, wait_until


def test_statement_timeouts_are_retried_then_dead_lettered_with_every_attempt_counted(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post the test keeps locked, and a worker whose statements time out after 0.3 s
    # (a transient error) and that retries twice
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(
        concurrency=1, env={"DB_STATEMENT_TIMEOUT_MS": "300", "TASK_MAX_RETRIES": "2"}
    )
    with row_locked(live_db, post) as holder:
        # When a view of it keeps timing out
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, post, task_id="keeps-timing-out")
        row = wait_until(lambda: failure(live_db, "keeps-timing-out"), 60, what="dead letter")
        holder.rollback()

    # Then it ran 1 + 2 times, with backoff in between, and was dead-lettered, not applied
    assert (row["error_class"], row["attempts"]) == ("OperationalError", 3)
    assert "statement timeout" in row["error_message"]
    assert log_count(worker, "transient database error") == 2
    assert "gave up after 2 retries" in worker.log()
    assert views(live_db, post) == 0
    assert processed_ids(live_db) == set()
