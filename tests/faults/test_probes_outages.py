"""The probes while Redis or PostgreSQL is away: not ready within 5 s, ready within 5 s of their
return, alive all along (an outage of theirs must not restart the worker)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.live.probe_tasks import seconds_until, status
from worker.development.live import LiveStack
from worker.development.processes import free_port
from worker.development.servers import PostgresServer, RedisServer

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


def through_outage(
    port: int, down: Callable[[], None], up: Callable[[], None], what: str
) -> tuple[str, list[int]]:
    """Take a server away for OUTAGE seconds and back, watching the probes; a figure line and
    every /livez answer during the outage.

    /readyz must turn 503 within 5 seconds of `down` and 200 within 5 seconds of `up`."""
    down()
    to_503 = seconds_until(port, "/readyz", 503, 5)
    livez = livez_throughout(port, OUTAGE - to_503)
    up()
    to_200 = seconds_until(port, "/readyz", 200, 5)
    line = (
        f"PROBES: {what}: /readyz 503 after {to_503:.1f}s, /livez 200 on all "
        f"{len(livez)} asks in {OUTAGE:.0f}s down, /readyz 200 {to_200:.1f}s after it came back"
    )
    return line, livez


@pytest.mark.parametrize(
    ("server", "away", "what"),
    [("broker", "kill", "redis killed"), ("pg", "stop", "postgres stopped")],
    ids=["redis-killed", "postgres-stopped"],
)
def test_probes_through_an_outage(
    stack: LiveStack,
    server: str,
    away: str,
    what: str,
    request: pytest.FixtureRequest,
    figure: Callable[[str], None],
) -> None:
    # Given a worker alive and ready, on throwaway servers
    port = probed_worker(stack)
    outage: RedisServer | PostgresServer = request.getfixturevalue(server)

    # When Redis is killed (or PostgreSQL stopped: fast shutdown cuts every connection), then
    # started again
    line, livez = through_outage(port, getattr(outage, away), outage.start, what)

    # Then /livez stayed 200 through the outage (the readiness bounds hold, or it raised)
    figure(line)
    assert set(livez) == {200}
    assert status(port, "/livez") == 200
