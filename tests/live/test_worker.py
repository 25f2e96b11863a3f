"""Real prefork workers against real PostgreSQL and Redis: exact counts, connections, failures."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from tests.steps import (
    RECORD_VIEW,
    add_posts,
    add_users,
    failure,
    failures,
    log_count,
    processed,
    processed_ids,
    scalar,
    send_views,
    total_views,
    views,
    views_by_post,
    worker_backends,
)
from worker.development.live import LiveStack, wait_until

VIEWS = 5000
POSTS = 50


def test_two_nodes_on_one_queue_count_5000_views_exactly(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 50 posts and two worker nodes with two children each, consuming one queue
    posts = add_posts(live_db, POSTS)
    nodes = [live_stack.start_worker(concurrency=2), live_stack.start_worker(concurrency=2)]

    # When an API sends 5,000 record_view messages by name, 100 per post
    started = time.monotonic()
    with live_stack.producer() as client:
        send_views(live_stack, client, posts, VIEWS, "l")
    wait_until(lambda: processed(live_db) >= VIEWS, 240, 0.2, f"{VIEWS} views")
    elapsed = time.monotonic() - started

    # Then every view was counted exactly once, and both nodes did part of the work
    shares = [log_count(node, r"record_view\[l-\d+\] succeeded") for node in nodes]
    figure(
        f"FAULT l: {total_views(live_db)}/{VIEWS} views on 2 nodes x -c 2 "
        f"(tasks per node {shares[0]}/{shares[1]}), {elapsed:.1f}s, {VIEWS / elapsed:.0f} tasks/s"
    )
    assert total_views(live_db) == VIEWS
    assert processed(live_db) == VIEWS
    assert views_by_post(live_db) == dict.fromkeys(posts, VIEWS // POSTS)
    assert failures(live_db) == {}
    assert sum(shares) == VIEWS
    assert all(shares)
    # And only pool children hold database connections, never a main process
    holders = worker_backends(live_db, live_stack.env["APP_NAME"])
    assert holders
    assert holders <= nodes[0].children() | nodes[1].children()


def test_connections_belong_to_live_children_after_replacement(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a worker that replaces each child after 20 tasks
    posts = add_posts(live_db, 2)
    worker = live_stack.start_worker(concurrency=2, extra_args=["--max-tasks-per-child", "20"])
    first_children = worker.children()

    # When it runs 200 tasks
    with live_stack.producer() as client:
        send_views(live_stack, client, posts, 200, "first")
        wait_until(lambda: total_views(live_db) == 200, 120, 0.1, "200 views counted")

        # Then the children were replaced
        assert worker.children().isdisjoint(first_children)

        # And once the new children work, every connection belongs to a live child: none to a
        # replaced child, none to the main process. A child replaced after its last task has
        # closed its connection, so the children keep working, one task at a time, until a
        # live child holds one and the replaced children's backends have ended.
        sent = [200]

        def only_live_children_connected() -> bool:
            holders = worker_backends(live_db, live_stack.env["APP_NAME"])
            if holders and holders <= worker.children():
                return True
            if total_views(live_db) == sent[0]:
                live_stack.send(client, RECORD_VIEW, posts[0], task_id=f"more-{sent[0]}")
                sent[0] += 1
            return False

        wait_until(only_live_children_connected, 120, 0.05, "connections only from live children")
    assert worker.pid not in worker_backends(live_db, live_stack.env["APP_NAME"])
    assert total_views(live_db) == sent[0]


def test_deactivate_user_by_name(live_stack: LiveStack, live_db: Engine) -> None:
    # Given two users and a worker
    user_id, other_id = add_users(live_db, 2)
    live_stack.start_worker(concurrency=2)

    # When an API sends deactivate_user for one of them by name, twice
    with live_stack.producer() as client:
        live_stack.send(client, "tasks.users.deactivate_user", user_id)
        live_stack.send(client, "tasks.users.deactivate_user", user_id)
    wait_until(lambda: processed(live_db) == 2, 60, 0.1, "both deactivate_user tasks")

    # Then that user is inactive and the other is not
    active = "SELECT is_active FROM users WHERE id = :id"
    assert (scalar(live_db, active, id=user_id), scalar(live_db, active, id=other_id)) == (
        False,
        True,
    )


def test_task_that_fails_halfway_leaves_no_partial_write(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a post, and a task for a post that does not exist: its task id is written
    # to processed_tasks before the UPDATE finds nothing and the task raises
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=1)
    with live_stack.producer() as client:
        live_stack.send(client, RECORD_VIEW, 999_999, task_id="fails-halfway")
        live_stack.send(client, RECORD_VIEW, post, task_id="after-failure")
    letter = wait_until(lambda: failure(live_db, "fails-halfway"), 60, 0.1, "the dead letter")
    wait_until(lambda: views(live_db, post) == 1, 60, 0.1, "the next view")

    # Then its claim was rolled back with it, the failure recorded once, and the child's
    # connection went back to the pool: idle, not idle in transaction
    with live_db.connect() as connection:
        states = connection.scalars(
            text(
                "SELECT state FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE :prefix"
            ),
            {"prefix": f"{live_stack.env['APP_NAME']}:%"},
        ).all()
    assert processed_ids(live_db) == {"after-failure"}
    assert (letter["error_class"], letter["attempts"]) == ("NotFound", 1)
    assert states
    assert set(states) == {"idle"}
    assert "post 999999 does not exist" in worker.log()
