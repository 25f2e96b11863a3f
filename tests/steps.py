"""Given and Then steps on a committed database, shared by the database, live and fault tests.

The steps benchmarks use too (`add_posts`, `total_views`, ...) live in worker.development.seed
and are imported from here as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from worker.development.live import LiveStack, LiveWorker
from worker.development.seed import add_posts, add_users, scalar, total_views  # noqa: F401
from worker.producer import viewbuffer

RECORD_VIEW = "tasks.posts.record_view"  # by name, as a producer that imports nothing of ours
# The worker's own dead-lettering of a refused message claims a task id too; it is no task.
_TASKS = "task_name <> 'tasks.maintenance.record_refusal'"


def add_dormant_users(engine: Engine, dormant: int, recent: int) -> None:
    """`dormant` users last seen 400 days ago and `recent` ones seen 3 days ago, interleaved."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, last_seen_at) "
                "SELECT 'u' || g || '@example.test', 'U' || g, 'x', now() - "
                "  CASE WHEN g % :every = 0 THEN interval '3 days' ELSE interval '400 days' END "
                "FROM generate_series(1, :n) g"
            ),
            {"n": dormant + recent, "every": (dormant + recent) // recent},
        )


def deactivated(engine: Engine) -> dict[int, datetime]:
    """When each inactive user was deactivated, by id."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, deactivated_at FROM users WHERE NOT is_active")
        ).all()
    return {row.id: row.deactivated_at for row in rows}


def views(engine: Engine, post_id: int) -> int:
    return int(scalar(engine, "SELECT view_count FROM posts WHERE id = :id", id=post_id))


def views_by_post(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, view_count FROM posts")).all()
    return {int(row[0]): int(row[1]) for row in rows}


def processed(engine: Engine) -> int:
    """How many task ids the ledger holds."""
    return int(scalar(engine, f"SELECT count(*) FROM processed_tasks WHERE {_TASKS}"))


def processed_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text(f"SELECT task_id FROM processed_tasks WHERE {_TASKS}")))


def applied_view_batches(engine: Engine) -> int:
    """How many view batches the ledger holds as applied."""
    batches = "SELECT count(*) FROM processed_tasks WHERE task_name = :name"
    return int(scalar(engine, batches, name=viewbuffer.BATCH_TASK_NAME))


def failures(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every dead letter, by task id."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM task_failures")).all()
    return {row.task_id: dict(row._mapping) for row in rows}


def failure(engine: Engine, task_id: str) -> dict[str, Any] | None:
    """The dead letter of `task_id` as a dict, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM task_failures WHERE task_id = :id"), {"id": task_id}
        ).one_or_none()
    return dict(row._mapping) if row is not None else None


def worker_backends(engine: Engine, app_name: str, waiting_on_a_lock: bool = False) -> set[int]:
    """OS pids of the worker processes (of APP_NAME `app_name`) connected to this database."""
    lock = "AND wait_event_type = 'Lock'" if waiting_on_a_lock else ""
    with engine.connect() as connection:
        names = connection.scalars(
            text(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                f"AND application_name LIKE :prefix {lock}"
            ),
            {"prefix": f"{app_name}:%"},
        ).all()
    return {int(name.rsplit(":", 1)[1]) for name in names}


@contextmanager
def row_locked(engine: Engine, post: int) -> Iterator[Connection]:
    """The post's row locked FOR UPDATE in a transaction of the test's own, until the block
    ends (or the caller commits the yielded connection): tasks on that post wait."""
    with engine.connect() as locker:
        locker.execute(text("SELECT id FROM posts WHERE id = :id FOR UPDATE"), {"id": post})
        yield locker


def owner_env(stack: LiveStack, owner: Engine) -> dict[str, str]:
    """The stack's environment as the database owner of `owner`'s URL: for operators' commands
    that read what the runtime role may not (the dead letters)."""
    return {**stack.env, "DATABASE_URL": owner.url.render_as_string(hide_password=False)}


def lock_waiters(engine: Engine, app_name: str) -> set[int]:
    """OS pids of worker processes whose database backend waits on a lock."""
    return worker_backends(engine, app_name, waiting_on_a_lock=True)


def send_views(stack: LiveStack, client: Any, posts: list[int], count: int, tag: str) -> None:
    """`count` record_view messages spread round-robin over `posts`, with readable task ids."""
    for i in range(count):
        stack.send(client, RECORD_VIEW, posts[i % len(posts)], task_id=f"{tag}-{i}")


def use_view_buffer(
    monkeypatch: pytest.MonkeyPatch, client: Any, queue: str
) -> viewbuffer.BufferKeys:
    """Point the flush task and the process-wide view counter at `client` and `queue`'s buffer.

    Never the Redis and queue the settings name: a developer's live buffer stays where it is.
    """
    keys = viewbuffer.buffer_keys(queue)
    monkeypatch.setattr(viewbuffer, "get_redis", lambda: client)
    monkeypatch.setattr(viewbuffer, "buffer_keys", lambda queue=None: keys)
    return keys


def log_count(worker: LiveWorker, pattern: str) -> int:
    """How often `pattern` (a regular expression) occurs in the worker's log."""
    return len(re.findall(pattern, worker.log()))
