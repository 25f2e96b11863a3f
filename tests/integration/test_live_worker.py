"""A real `celery -A worker.app worker -P prefork -c 2` against real PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, select, text

from tests.livecelery import LiveStack, wait_until
from tests.seed import add_posts, add_users, total_views
from worker.models import Post, ProcessedTask, TaskFailure, User

pytestmark = pytest.mark.integration


def client_pids(engine: Engine, app_name: str) -> dict[int, int]:
    """Backend pid -> worker OS pid, for every connection our worker holds to the test database."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE :prefix"
            ),
            {"prefix": f"{app_name}:%"},
        ).all()
    return {row.pid: int(row.application_name.rsplit(":", 1)[1]) for row in rows}


def test_1000_views_over_10_posts_are_counted_exactly(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given ten posts and a prefork worker with two children
    posts = add_posts(live_db, 10)
    worker = live_stack.start_worker(concurrency=2)

    # When an API service sends 1000 record_view messages by name
    started = time.monotonic()
    with live_stack.producer() as client:
        for i in range(1000):
            live_stack.send(client, "tasks.posts.record_view", posts[i % 10])
    wait_until(lambda: total_views(live_db) >= 1000, timeout=120, what="1000 views counted")
    elapsed = time.monotonic() - started

    # Then every post has exactly 100 views and every task id was recorded once
    with live_db.connect() as connection:
        counts = dict(connection.execute(select(Post.id, Post.view_count)).all())
        processed = connection.scalar(select(text("count(*)")).select_from(ProcessedTask))
    assert counts == dict.fromkeys(posts, 100)
    assert processed == 1000
    print(f"\n1000 record_view tasks on -c 2: {elapsed:.2f}s, {1000 / elapsed:.0f} tasks/s")

    # And only the pool children hold database connections, never the main process
    holders = set(client_pids(live_db, live_stack.env["APP_NAME"]).values())
    assert holders
    assert worker.pid not in holders
    assert holders <= worker.children()


def test_connections_belong_to_live_children_after_replacement(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a worker that replaces each child after 20 tasks
    posts = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=2, extra_args=["--max-tasks-per-child", "20"])
    first_children = worker.children()

    # When it runs 200 tasks
    with live_stack.producer() as client:
        for i in range(200):
            live_stack.send(client, "tasks.posts.record_view", posts[i % 2])
    wait_until(lambda: total_views(live_db) >= 200, timeout=120, what="200 views counted")

    # Then the children were replaced
    assert worker.children().isdisjoint(first_children)

    # And once the new children have worked too, every connection belongs to a live child:
    # none to a replaced child, none to the main process
    def holders() -> set[int]:
        return set(client_pids(live_db, live_stack.env["APP_NAME"]).values())

    sent = 200
    with live_stack.producer() as client:
        while not holders() and sent < 240:  # a child replaced on its last task has not connected
            live_stack.send(client, "tasks.posts.record_view", posts[sent % 2])
            sent += 1
            wait_until(lambda n=sent: total_views(live_db) >= n, timeout=60, what=f"{sent} views")
    wait_until(
        lambda: holders() <= worker.children() and bool(holders()),
        timeout=30,
        what="connections only from live children",
    )
    assert worker.pid not in holders()
    assert total_views(live_db) == sent


def test_deactivate_user_by_name(live_stack: LiveStack, live_db: Engine) -> None:
    user_id, other_id = add_users(live_db, 2)
    live_stack.start_worker(concurrency=2)
    with live_stack.producer() as client:
        live_stack.send(client, "tasks.users.deactivate_user", user_id)
        live_stack.send(client, "tasks.users.deactivate_user", user_id)

    def deactivated() -> bool:
        with live_db.connect() as connection:
            done = connection.scalar(select(text("count(*)")).select_from(ProcessedTask))
            return done == 2

    wait_until(deactivated, timeout=60, what="both deactivate_user tasks")
    with live_db.connect() as connection:
        rows = dict(connection.execute(select(User.id, User.is_active)).all())
    assert rows == {user_id: False, other_id: True}


def test_task_that_fails_halfway_leaves_no_partial_write(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post, and a task for a post that does not exist: its task id is written
    # to processed_tasks before the UPDATE finds nothing and the task raises
    posts = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=1)
    with live_stack.producer() as client:
        live_stack.send(client, "tasks.posts.record_view", 999_999, task_id="fails-halfway")
        live_stack.send(client, "tasks.posts.record_view", posts[0], task_id="after-failure")

    def settled() -> bool:
        with live_db.connect() as connection:
            failed = select(TaskFailure.task_id).where(TaskFailure.task_id == "fails-halfway")
            return connection.scalar(failed) is not None and (
                connection.scalar(select(Post.view_count).where(Post.id == posts[0])) == 1
            )

    wait_until(settled, timeout=60, what="failure recorded and next task applied")
    with live_db.connect() as connection:
        ids = set(connection.scalars(select(ProcessedTask.task_id)))
        failure = connection.execute(
            select(TaskFailure.error_class, TaskFailure.attempts).where(
                TaskFailure.task_id == "fails-halfway"
            )
        ).one()
        # The child's connection went back to the pool: idle, not idle in transaction
        states = connection.scalars(
            text(
                "SELECT state FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE :prefix"
            ),
            {"prefix": f"{live_stack.env['APP_NAME']}:%"},
        ).all()
    assert ids == {"after-failure"}
    assert tuple(failure) == ("NotFound", 1)
    assert states
    assert set(states) == {"idle"}
    assert "post 999999 does not exist" in worker.log()
