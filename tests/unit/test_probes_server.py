"""The probes' server without a worker: what it answers before a consumer, and /metrics."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from worker.config import Settings
from worker.development.live import wait_until
from worker.development.processes import free_port
from worker.operations import probes


def get(port: int, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.fixture
def port() -> Iterator[int]:
    """Probes served on a free port, for servers that are not there."""
    settings = Settings(
        worker_http_port=free_port(),
        worker_http_host="127.0.0.1",
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
        database_url=SecretStr(f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/nowhere"),
    )
    # No metrics source yet: importing the worker's app (another test in this process may
    # have) registers one, and it is put back after.
    registered = probes.probes.metrics
    probes.set_metrics_source(None)
    server = probes.serve(settings)
    assert server is not None
    try:
        yield settings.worker_http_port
    finally:
        probes.set_metrics_source(registered)
        probes.stop(server)


def test_before_a_consumer_it_is_alive_but_not_ready_naming_each_failing_check(port: int) -> None:
    # Given probes whose Redis and PostgreSQL are not there, and no consumer yet
    def checked() -> bool:
        body = json.loads(get(port, "/readyz")[2])
        return "not checked yet" not in body["checks"].values()

    wait_until(checked, 10, 0.05, "both checks to have run")

    # Then /livez is 200 and /readyz 503, saying why without hosts or URLs
    assert get(port, "/livez")[0] == 200
    status, content_type, body = get(port, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["checks"] == {
        "consumer": "not attached",
        "redis": "ConnectionError",
        "postgres": "OperationalError",
    }


def test_metrics_come_from_the_registered_source_and_are_404_without_one(port: int) -> None:
    assert get(port, "/metrics")[0] == 404

    exposition = (b"worker_up 1\n", "text/plain; version=0.0.4; charset=utf-8")
    probes.set_metrics_source(lambda: exposition)
    assert get(port, "/metrics") == (200, exposition[1], exposition[0])

    def broken() -> tuple[bytes, str]:
        raise RuntimeError("registry is broken")

    probes.set_metrics_source(broken)
    assert get(port, "/metrics")[0] == 500
