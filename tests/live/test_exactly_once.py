"""One task id published again and again (a retrying API, a replayed outbox) is applied once."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from tests.steps import add_posts, failures, log_count, processed, processed_ids, views_by_post
from worker.development.live import LiveStack, wait_until
from worker.producer.client import TaskClient


def test_one_idempotency_key_sent_five_times_is_applied_once(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a post and a worker with two children, so copies can race each other
    post, other = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=2)

    # When an API sends the same request five times with one idempotency key, then another
    with live_stack.producer() as app:
        client = TaskClient(app)
        for _ in range(5):
            assert client.record_view(post, task_id="order-77:view") == "order-77:view"
        client.record_view(other, task_id="after-copies")
    done = r"record_view\[order-77:view\] succeeded"
    wait_until(lambda: log_count(worker, done) == 5, 60, 0.1, "all five copies to finish")
    wait_until(lambda: processed(live_db) == 2, 60, 0.1, "the view after the copies")

    # Then the view was counted once and the ledger skipped the other four copies
    views = views_by_post(live_db)
    skipped = log_count(worker, r"\[order-77:view\] was already applied; skipping duplicate")
    figure(f"FAULT b: 5 deliveries of one task id -> {views[post]} view applied, {skipped} skipped")
    assert views == {post: 1, other: 1}
    assert processed_ids(live_db) == {"order-77:view", "after-copies"}
    assert skipped == 4
    assert failures(live_db) == {}
