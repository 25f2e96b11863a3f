"""After-commit enqueueing against a live worker: no task runs before its row is committed."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.database.producer import add_post
from tests.steps import failures, processed, views
from worker.development.live import LiveStack, wait_until
from worker.producer.client import TaskClient
from worker.producer.enqueue import after_commit


def test_worker_finds_the_row_the_api_just_created(live_stack: LiveStack, live_db: Engine) -> None:
    # Given a running worker
    live_stack.start_worker(concurrency=2)

    # When an API creates posts and enqueues their first views in the same transactions
    with live_stack.producer() as app:
        client = TaskClient(app)
        post_ids = []
        for _ in range(20):
            with Session(live_db) as session, session.begin():
                _, post_id = add_post(session)
                after_commit(session, client).record_view(post_id)
            post_ids.append(post_id)

    # Then every view is counted: no task ran before its post was committed
    wait_until(lambda: processed(live_db) == 20, 60, 0.1, "20 views processed")
    assert {views(live_db, post_id) for post_id in post_ids} == {1}
    assert failures(live_db) == {}
