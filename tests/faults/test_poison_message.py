"""Fault h: a message that kills its process three times is dead-lettered, the worker goes on."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from tests.faults.scenario import RECORD_VIEW, add_posts, lock_waiters, log_count, views_by_post
from tests.livecelery import LiveStack, wait_until

pytestmark = pytest.mark.faults

# The hard limit kills the child for real (SIGTERM, then SIGKILL from the pool); the task below
# blocks inside libpq, where the soft limit's exception cannot be raised, so only the kill ends it.
LIMITS = {"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "2", "MAX_DELIVERIES": "3"}


def dead_letter(engine: Engine, task_id: str) -> tuple[str, int] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT error_class, attempts FROM task_failures WHERE task_id = :id"),
            {"id": task_id},
        ).one_or_none()
    return (row.error_class, row.attempts) if row else None


def ledger_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT task_id FROM processed_tasks")))


def test_h_message_that_kills_its_process_three_times_is_dead_lettered(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a one-child worker with a 2 s hard time limit, and a post the test keeps locked,
    # so every delivery of a view of it blocks until the pool kills its process
    post, other = add_posts(db, 2)
    worker = stack.start_worker(concurrency=1, env=LIMITS)
    first_child = worker.children()
    started = time.monotonic()
    with db.connect() as locker:
        locker.begin()
        locker.execute(text("SELECT id FROM posts WHERE id = :id FOR UPDATE"), {"id": post})
        with stack.producer() as client:
            stack.send(client, RECORD_VIEW, post, task_id="poison")

        # When it has been delivered, and has killed its process, three times
        letter = wait_until(lambda: dead_letter(db, "poison"), 120, 0.1, "the dead letter")
        took = time.monotonic() - started
        kills = log_count(worker, r"Hard time limit \(2s\) exceeded for [\w.]+\[poison\]")
        locker.commit()

    # Then it was dead-lettered instead of being run a fourth time, and the worker goes on
    with stack.producer() as client:
        stack.send(client, RECORD_VIEW, other, task_id="after-poison")
    wait_until(lambda: "after-poison" in ledger_ids(db), 60, 0.1, "the next task")
    # the killed children's backends give up their uncommitted work once the lock is free
    wait_until(lambda: not lock_waiters(db, stack.env["APP_NAME"]), 60, 0.1, "orphans to end")
    views = views_by_post(db)
    figure(
        f"FAULT h: {kills} hard-limit kills of one message, then dead-lettered as {letter[0]} "
        f"(attempts={letter[1]}) after {took:.1f}s; poisoned post {views[post]} views, "
        f"next task applied ({views[other]} view)"
    )
    assert kills == 3
    assert letter == ("PoisonMessage", 3)
    assert views == {post: 0, other: 1}
    assert ledger_ids(db) == {"after-poison"}
    assert worker.proc.poll() is None
    assert worker.children().isdisjoint(first_child)
