"""The outbox against a Redis that goes down: the task waits in PostgreSQL and is applied once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from tests.database.producer import add_post
from worker.development.live import LiveStack, stack_env, wait_until
from worker.development.processes import run_cli
from worker.development.servers import RedisServer
from worker.models import OutboxMessage, Post, ProcessedTask, TaskFailure, User
from worker.producer.outbox import in_outbox


def test_redis_down_when_the_api_commits_then_back_applies_the_outbox_tasks_once(
    committed_db_url: URL, live_db: Engine, broker: RedisServer, tmp_path: Path
) -> None:
    stack = LiveStack(stack_env(committed_db_url, broker.url), tmp_path)
    try:
        # Given Redis is down when the API commits a change and its tasks
        broker.stop()
        with Session(live_db) as session, session.begin():
            user_id, post_id = add_post(session)
            view_id = in_outbox(session).record_view(post_id)
            deactivate_id = in_outbox(session).deactivate_user(user_id)

        # When the relay runs while Redis is down: the rows wait, with the error recorded
        down = run_cli(stack.env, "outbox", "relay", "--once")
        assert down.returncode == 1
        assert "rows stay pending" in down.stderr
        status = run_cli(stack.env, "outbox", "status")
        assert "pending=2 oldest=" in status.stdout
        assert "failing=1" in status.stdout

        # And Redis comes back, the relay runs again, and a worker starts
        broker.start()
        up = run_cli(stack.env, "outbox", "relay", "--once")
        assert up.returncode == 0, up.stderr
        assert "published 2" in up.stdout
        worker = stack.start_worker(concurrency=2)

        # Then both tasks are applied, under the outbox task ids
        def applied() -> bool:
            with Session(live_db) as session:
                return session.scalar(select(func.count()).select_from(ProcessedTask)) == 2

        wait_until(applied, timeout=60, what="both outbox tasks applied")
        with Session(live_db) as session:
            assert set(session.scalars(select(ProcessedTask.task_id))) == {view_id, deactivate_id}
            assert session.scalar(select(Post.view_count).where(Post.id == post_id)) == 1
            assert session.scalar(select(User.is_active).where(User.id == user_id)) is False
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                )
                == 0
            )

        # When a relay dies after publishing but before marking the rows sent (simulated by
        # un-marking them), the next relay publishes the same task ids again
        with Session(live_db) as session, session.begin():
            session.execute(update(OutboxMessage).values(sent_at=None))
        again = run_cli(stack.env, "outbox", "relay", "--once")
        assert "published 2" in again.stdout

        # Then the worker's ledger absorbs the duplicates: still one view, nothing failed
        wait_until(
            lambda: worker.log().count("was already applied") == 2,
            timeout=60,
            what="duplicates skipped",
        )
        with Session(live_db) as session:
            assert session.scalar(select(Post.view_count).where(Post.id == post_id)) == 1
            assert session.scalar(select(func.count()).select_from(ProcessedTask)) == 2
            assert session.scalar(select(func.count()).select_from(TaskFailure)) == 0
    finally:
        stack.kill()
