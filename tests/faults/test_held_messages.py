"""Messages held for their eta: never handed out again as poison, never applied twice.

A raw producer is not capped by the typed client: its eta may lie beyond what Redis's
visibility timeout allows, and its held message goes back to the queue at every warm shutdown.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, text

from tests.envelopes import kombu_message, raw
from tests.faults.scenario import add_posts, views_by_post
from tests.livecelery import ROOT, LiveStack, wait_until
from worker.development.services import PostgresServer, RedisServer
from worker.runtime.poison import delivery_key

pytestmark = pytest.mark.faults

# A held message must finish within the visibility timeout: the eta may lie 60 - 10 = 50 s ahead.
LIMITS = {"TASK_SOFT_TIME_LIMIT": "5", "TASK_TIME_LIMIT": "10", "BROKER_VISIBILITY_TIMEOUT": "60"}
HELD_FOR = 40


def dead_letter(engine: Engine, task_id: str) -> tuple[str, str] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT error_class, error_message FROM task_failures WHERE task_id = :id"),
            {"id": task_id},
        ).one_or_none()
    return (row.error_class, row.error_message) if row is not None else None


def push_with_eta(client: redis.Redis, queue: str, task_id: str, post: int, eta: datetime) -> None:
    message = kombu_message(queue, task_id, [post], headers={"eta": eta.isoformat()})
    client.lpush(queue, raw(message))


def failures_retry(pg: PostgresServer, stack: LiveStack, task_id: str) -> str:
    env = {**stack.env, "DATABASE_URL": pg.url}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "failures", "retry", task_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_a_held_message_survives_worker_restarts_and_is_applied_once(
    stack: LiveStack,
    broker: RedisServer,
    pg: PostgresServer,
    db: Engine,
    figure: Callable[[str], None],
) -> None:
    # Given a worker with a short visibility timeout, and a raw message held for 40 s
    (post,) = add_posts(db, 1)
    client = redis.Redis.from_url(broker.url)
    eta = datetime.now(UTC) + timedelta(seconds=HELD_FOR)
    worker = stack.start_worker(concurrency=1, env=LIMITS)
    push_with_eta(client, stack.queue, "held", post, eta)

    # When the worker is restarted (warm shutdown) while it holds the message, again and again
    restarts = 0
    while datetime.now(UTC) < eta - timedelta(seconds=15) and restarts < 4:
        wait_until(lambda w=worker: "held] received" in w.log(), 30, 0.1, "the held message")
        assert worker.stop() == 0
        assert views_by_post(db)[post] == 0  # handed back unstarted
        restarts += 1
        worker = stack.start_worker(concurrency=1, env=LIMITS)

    # Then once its eta comes it is applied exactly once, and no delivery was counted as dying
    wait_until(lambda: views_by_post(db)[post] == 1, HELD_FOR + 60, 0.2, "the held view")
    assert restarts >= 2
    assert dead_letter(db, "held") is None
    assert "did not finish" not in worker.log()
    assert int(client.get(delivery_key(stack.queue, "held", 0)) or 0) == 0
    assert worker.proc.poll() is None
    assert views_by_post(db)[post] == 1

    # And a dead letter of it (as a false PoisonMessage once left) cannot be retried into a double
    with db.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO task_failures (task_id, task_name, args, error_class, error_message) "
                "VALUES ('held', 'tasks.posts.record_view', CAST(:args AS jsonb), "
                "'PoisonMessage', 'delivered 3 times without finishing')"
            ),
            {"args": f"[{post}]"},
        )
    output = failures_retry(pg, stack, "held")
    assert "already applied" in output
    assert views_by_post(db)[post] == 1
    client.close()
    figure(
        f"FAULT held message: eta {HELD_FOR}s ahead, {restarts} warm restarts while held; "
        "applied once, no PoisonMessage, delivery count 0; failures retry skipped it"
    )


def test_an_eta_beyond_the_visibility_timeout_is_dead_lettered_and_retried_once(
    stack: LiveStack, broker: RedisServer, pg: PostgresServer, db: Engine
) -> None:
    # Given a worker with a 60 s visibility timeout
    (post,) = add_posts(db, 1)
    client = redis.Redis.from_url(broker.url)
    worker = stack.start_worker(concurrency=1, env=LIMITS)

    # When a raw producer sends a view for an hour from now
    eta = datetime.now(UTC) + timedelta(hours=1)
    push_with_eta(client, stack.queue, "far", post, eta)

    # Then it is dead-lettered at once, naming its eta and the limit, and not held
    letter = wait_until(lambda: dead_letter(db, "far"), 60, 0.1, "the far eta dead-lettered")
    assert letter[0] == "EtaTooFar"
    assert eta.isoformat() in letter[1]
    assert "the limit is 50s" in letter[1]
    assert client.llen(stack.queue) == 0
    assert views_by_post(db)[post] == 0

    # And retrying it sends it now, applied once; a second retry finds nothing to send
    output = failures_retry(pg, stack, "far")
    assert "requeued" in output
    wait_until(lambda: views_by_post(db)[post] == 1, 60, 0.2, "the retried view")
    assert dead_letter(db, "far") is None
    assert worker.proc.poll() is None
    client.close()
