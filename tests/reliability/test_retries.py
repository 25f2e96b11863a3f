"""Transient database errors: retried with backoff, then dead-lettered; a restart costs nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import live_env
from tests.livecelery import LiveStack, wait_until
from tests.reliability.helpers import add_posts, failure, processed_ids, views
from worker.development.databases import migrate
from worker.development.services import MissingBinary, PostgresServer

RECORD_VIEW = "tasks.posts.record_view"


@pytest.mark.integration
def test_retries_exhausted_are_dead_lettered_with_every_attempt_counted(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post the test keeps locked, and a worker whose statements time out after 0.3 s
    # (a transient error) and that retries twice
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(
        concurrency=1, env={"DB_STATEMENT_TIMEOUT_MS": "300", "TASK_MAX_RETRIES": "2"}
    )
    with live_db.connect() as holder:
        holder.execute(text("SELECT 1 FROM posts WHERE id = :id FOR UPDATE"), {"id": post})

        # When a view of it keeps timing out
        with live_stack.producer() as client:
            live_stack.send(client, RECORD_VIEW, post, task_id="keeps-timing-out")
        row = wait_until(lambda: failure(live_db, "keeps-timing-out"), 60, what="dead letter")
        holder.rollback()

    # Then it ran 1 + 2 times, with backoff in between, and was dead-lettered, not applied
    assert (row["error_class"], row["attempts"]) == ("OperationalError", 3)
    assert "statement timeout" in row["error_message"]
    log = worker.log()
    assert log.count("transient database error") == 2
    assert "gave up after 2 retries" in log
    assert views(live_db, post) == 0
    assert processed_ids(live_db) == set()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg")
    try:
        server.start()
    except MissingBinary as error:
        pytest.skip(str(error))
    try:
        migrate(server.url)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.mark.faults
def test_a_restarted_database_costs_no_task_and_no_retry(
    pg: PostgresServer, live_redis_url: str, tmp_path: Path
) -> None:
    # Given a worker whose pool holds a connection to a throwaway server
    db = create_engine(pg.url, poolclass=NullPool)
    (post,) = add_posts(db, 1)
    stack = LiveStack(live_env(make_url(pg.url), live_redis_url), tmp_path)
    try:
        worker = stack.start_worker(concurrency=1)
        with stack.producer() as client:
            stack.send(client, RECORD_VIEW, post, task_id="before")
            wait_until(lambda: views(db, post) == 1, 60, what="the first view")

            # When the server restarts (every connection is cut) between two tasks
            pg.restart()
            stack.send(client, RECORD_VIEW, post, task_id="after")
            wait_until(lambda: views(db, post) == 2, 60, what="the view after the restart")
    finally:
        stack.shutdown()
        db.dispose()

    # Then pool_pre_ping replaced the dead connection: applied first time, no retry, no failure
    assert processed_ids(db) == {"before", "after"}
    assert "transient database error" not in worker.log()
    assert failure(db, "after") is None
