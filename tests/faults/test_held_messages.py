"""A message held for its eta through warm restarts: never taken for poison, never applied twice.

A raw producer is not capped by the typed client, and a held message goes back to the queue at
every warm shutdown. Its own Redis: the short visibility timeout would make a worker on the
shared test database restore other tests' unacknowledged messages.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import Engine, text

from tests.envelopes import kombu_message, raw
from tests.steps import add_posts, failure, owner_env, views_by_post
from worker.development.live import LiveStack, wait_until
from worker.development.processes import run_cli
from worker.development.servers import RedisServer
from worker.runtime.poison import delivery_key

# A held message must finish within the visibility timeout: the eta may lie 60 - 10 = 50 s ahead.
LIMITS = {"TASK_SOFT_TIME_LIMIT": "5", "TASK_TIME_LIMIT": "10", "BROKER_VISIBILITY_TIMEOUT": "60"}
HELD_FOR = 30


def push_with_eta(client: redis.Redis, queue: str, task_id: str, post: int, eta: datetime) -> None:
    message = kombu_message(queue, task_id, [post], headers={"eta": eta.isoformat()})
    client.lpush(queue, raw(message))


def failures_retry(db: Engine, stack: LiveStack, task_id: str) -> str:
    """`python -m worker failures retry` in the worker's environment, as the owner."""
    done = run_cli(owner_env(stack, db), "failures", "retry", task_id, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_warm_restarts_while_a_message_is_held_for_its_eta_apply_it_once(
    stack: LiveStack, broker: RedisServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker with a short visibility timeout, and a raw message held for 30 s
    (post,) = add_posts(db, 1)
    client = redis.Redis.from_url(broker.url)
    eta = datetime.now(UTC) + timedelta(seconds=HELD_FOR)
    worker = stack.start_worker(concurrency=1, env=LIMITS)
    push_with_eta(client, stack.queue, "held", post, eta)

    # When the worker is restarted (warm shutdown) while it holds the message, again and again
    restarts = 0
    while datetime.now(UTC) < eta - timedelta(seconds=15) and restarts < 3:
        wait_until(lambda w=worker: "held] received" in w.log(), 30, 0.1, "the held message")
        assert worker.stop() == 0
        assert views_by_post(db)[post] == 0  # handed back unstarted
        restarts += 1
        worker = stack.start_worker(concurrency=1, env=LIMITS)

    # Then once its eta comes it is applied exactly once, and no delivery was counted as dying
    wait_until(lambda: views_by_post(db)[post] == 1, HELD_FOR + 60, 0.2, "the held view")
    assert restarts >= 2
    assert failure(db, "held") is None
    assert "did not finish" not in worker.log()
    assert int(client.get(delivery_key(stack.queue, "held", 0)) or 0) == 0
    assert worker.running()
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
    output = failures_retry(db, stack, "held")
    assert "already applied" in output
    assert views_by_post(db)[post] == 1
    client.close()
    figure(
        f"FAULT held message: eta {HELD_FOR}s ahead, {restarts} warm restarts while held; "
        "applied once, no PoisonMessage, delivery count 0; failures retry skipped it"
    )
