"""The probes while Redis or PostgreSQL is away: not ready within 5 s, ready within 5 s of their
return, alive all along (an outage of theirs must not restart the worker)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.live.probe_tasks import seconds_until, status
from worker.development.live import LiveStack
from worker.development.services import PostgresServer, RedisServer, free_port

OUTAGE = 12.0  # seconds: past kombu's own reconnect back-off of 2, 4, 6 s


def probed_worker(stack: LiveStack) -> int:
    """Start a worker serving probes on a free port, ready; its port."""
    port = free_port()
    stack.start_worker(concurrency=2, env={"WORKER_HTTP_PORT": str(port)})
    seconds_until(port, "/readyz", 200, 10)
    return port


def livez_throughout(port: int, seconds: float) -> list[int]:
    """/livez every 100 ms for `seconds`: the outage itself, watched."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers.append(status(port, "/livez"))
        time.sleep(0.1)
    return answers


def test_redis_killed_then_restarted(
    stack: LiveStack, broker: RedisServer, figure: Callable[[str], None]
) -> None:
    # Given a worker alive and ready
    port = probed_worker(stack)

    # When Redis is killed
    broker.kill()
    # Then /readyz turns 503 within 5 seconds, and /livez stays 200 through the outage
    to_503 = seconds_until(port, "/readyz", 503, 5)
    livez = livez_throughout(port, OUTAGE - to_503)

    # When Redis is back, /readyz turns 200 within 5 seconds
    broker.start()
    to_200 = seconds_until(port, "/readyz", 200, 5)
    figure(
        f"PROBES: redis killed: /readyz 503 after {to_503:.1f}s, /livez 200 on all "
        f"{len(livez)} asks in {OUTAGE:.0f}s down, /readyz 200 {to_200:.1f}s after restart"
    )
    assert set(livez) == {200}
    assert status(port, "/livez") == 200


def test_postgres_stopped_then_started(
    stack: LiveStack, pg: PostgresServer, figure: Callable[[str], None]
) -> None:
    # Given a worker alive and ready
    port = probed_worker(stack)

    # When PostgreSQL stops (fast shutdown: every connection is cut)
    pg.stop()
    # Then /readyz turns 503 within 5 seconds, and /livez stays 200 through the outage
    to_503 = seconds_until(port, "/readyz", 503, 5)
    livez = livez_throughout(port, OUTAGE - to_503)

    # When PostgreSQL is back, /readyz turns 200 within 5 seconds
    pg.start()
    to_200 = seconds_until(port, "/readyz", 200, 5)
    figure(
        f"PROBES: postgres stopped: /readyz 503 after {to_503:.1f}s, /livez 200 on all "
        f"{len(livez)} asks in {OUTAGE:.0f}s down, /readyz 200 {to_200:.1f}s after start"
    )
    assert set(livez) == {200}
