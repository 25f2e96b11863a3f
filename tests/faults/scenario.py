"""Given and Then steps shared by the fault tests: rows to work on, counts, lock waiters, logs."""

from __future__ import annotations

import re
import time

from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.livecelery import LiveStack, LiveWorker
from tests.seed import add_posts as add_posts  # re-exported for the fault tests
from tests.seed import total_views as total_views

RECORD_VIEW = "tasks.posts.record_view"  # by name, as a producer that imports nothing of ours


def scalar(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text(sql), params) or 0)


def processed(engine: Engine) -> int:
    """Applied task ids, leaving out the worker's own dead-lettering of refused messages."""
    return scalar(
        engine,
        "SELECT count(*) FROM processed_tasks "
        "WHERE task_name <> 'tasks.maintenance.record_refusal'",
    )


def failures(engine: Engine) -> int:
    return scalar(engine, "SELECT count(*) FROM task_failures")


def views_by_post(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, view_count FROM posts")).all()
    return {int(row[0]): int(row[1]) for row in rows}


def reachable_count(engine: Engine, counter: str = "processed") -> int | None:
    """`processed(engine)` (or total views), or None while the server is down or restarting."""
    try:
        return processed(engine) if counter == "processed" else total_views(engine)
    except OperationalError:
        return None


def lock_waiters(engine: Engine, app_name: str) -> set[int]:
    """OS pids of worker processes whose database backend is waiting on a lock."""
    with engine.connect() as connection:
        names = connection.scalars(
            text(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND application_name LIKE :prefix"
            ),
            {"prefix": f"{app_name}:%"},
        ).all()
    return {int(name.rsplit(":", 1)[1]) for name in names}


def send_views(stack: LiveStack, client: Celery, posts: list[int], count: int, tag: str) -> None:
    """`count` record_view messages spread round-robin over `posts`, with readable task ids."""
    for i in range(count):
        stack.send(client, RECORD_VIEW, posts[i % len(posts)], task_id=f"{tag}-{i}")


def log_count(worker: LiveWorker, pattern: str) -> int:
    return len(re.findall(pattern, worker.log()))


def wait_for_count(
    engine: Engine, target: int, timeout: float, counter: str = "processed"
) -> float:
    """Poll until `target` tasks are recorded (surviving server outages); seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        last = reachable_count(engine, counter)
        if last is not None and last >= target:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s: {counter} = {last}, wanted {target}")


def recovery_after_restart(engine: Engine) -> tuple[float, float]:
    """Seconds from the server's (re)start to the first task committed after it, and the
    whole stall: from the last task committed before the outage to that first one after."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "WITH up AS (SELECT pg_postmaster_start_time() AS at), "
                "after AS (SELECT min(finished_at) AS at FROM processed_tasks, up "
                "          WHERE finished_at >= up.at), "
                "before AS (SELECT max(finished_at) AS at FROM processed_tasks, up "
                "           WHERE finished_at < up.at) "
                "SELECT extract(epoch FROM after.at - up.at), "
                "       extract(epoch FROM after.at - before.at) "
                "FROM up, after, before"
            )
        ).one()
    return float(row[0]), float(row[1])
