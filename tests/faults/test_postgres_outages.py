"""Faults c and d: PostgreSQL restarted, and down for ten seconds, in the middle of a run."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from tests.faults.scenario import (
    add_posts,
    failures,
    log_count,
    processed,
    recovery_after_restart,
    send_views,
    total_views,
    views_by_post,
    wait_for_count,
)
from tests.livecelery import LiveStack
from worker.development.services import PostgresServer

pytestmark = pytest.mark.faults

RETRY_LOG = r"transient database error"


def test_c_postgres_restarted_during_2000_views_counts_exactly_2000(
    stack: LiveStack, pg: PostgresServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 20 posts, a worker, and 2,000 record_view messages on their way
    posts = add_posts(db, 20)
    worker = stack.start_worker(concurrency=2)
    with stack.producer() as client:
        send_views(stack, client, posts, 2000, "c")

    # When PostgreSQL is restarted (fast shutdown: every connection is cut) after ~600 of them
    wait_for_count(db, 600, timeout=120)
    restarted_at = processed(db)
    started = time.monotonic()
    pg.restart()
    down = time.monotonic() - started
    wait_for_count(db, 2000, timeout=180)
    recovered, stall = recovery_after_restart(db)

    # Then every view was counted exactly once, and none was dead-lettered
    views = total_views(db)
    figure(
        f"FAULT c: {views}/2000 views, postgres restart ({down:.1f}s) at {restarted_at}, "
        f"recovered in {recovered:.1f}s after it was up (commits stalled {stall:.1f}s), "
        f"{log_count(worker, RETRY_LOG)} retries, {failures(db)} dead letters"
    )
    assert views == 2000
    assert processed(db) == 2000
    assert views_by_post(db) == dict.fromkeys(posts, 100)
    assert failures(db) == 0


DOWNTIME = 10.0  # seconds, as issue #3 states it


def test_d_postgres_down_for_10_seconds_every_task_completes_exactly_once(
    stack: LiveStack, pg: PostgresServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 10 posts, a worker, and 600 record_view messages on their way
    posts = add_posts(db, 10)
    worker = stack.start_worker(concurrency=2)
    with stack.producer() as client:
        send_views(stack, client, posts, 600, "d")

    # When PostgreSQL goes away for ten seconds after ~150 of them
    wait_for_count(db, 150, timeout=120)
    stopped_after = processed(db)
    pg.stop()
    stopped_at = time.monotonic()
    time.sleep(DOWNTIME)  # the outage itself: the worker retries against a closed port meanwhile
    pg.start()
    down = time.monotonic() - stopped_at
    took = wait_for_count(db, 600, timeout=240)
    recovered, stall = recovery_after_restart(db)

    # Then every task completed exactly once, none was dead-lettered
    views = total_views(db)
    figure(
        f"FAULT d: {views}/600 views, postgres down {down:.1f}s at {stopped_after}, "
        f"recovered in {recovered:.1f}s after it was up (commits stalled {stall:.1f}s), "
        f"all done {took:.1f}s after it was up, {log_count(worker, RETRY_LOG)} retries, "
        f"{failures(db)} dead letters"
    )
    assert views == 600
    assert processed(db) == 600
    assert views_by_post(db) == dict.fromkeys(posts, 60)
    assert failures(db) == 0
