"""Reading a live worker's /metrics in tests: every sample, by name and labels."""

from __future__ import annotations

import http.client

from prometheus_client.parser import text_string_to_metric_families

from worker.development.live import LiveStack, LiveWorker, wait_until
from worker.development.processes import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the worker's /metrics on 127.0.0.1:`port`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
        assert response.getheader("Content-Type", "").startswith("text/plain")
    finally:
        connection.close()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these labels, if served."""
    return samples.get((name, frozenset(labels.items())))


def outcomes(samples: Samples, task: str) -> dict[str, float]:
    """worker_tasks_total of `task` by outcome, leaving out the zeros."""
    found = {}
    for (name, labels), number in samples.items():
        label = dict(labels)
        if name == "worker_tasks_total" and label["task"] == task and number:
            found[label["outcome"]] = number
    return found


def metrics_worker(
    stack: LiveStack,
    concurrency: int = 2,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[LiveWorker, int]:
    """A worker serving /metrics on a free port, once its children are up."""
    port = free_port()
    worker = stack.start_worker(
        concurrency=concurrency,
        extra_args=extra_args or [],
        env={**(env or {}), "WORKER_HTTP_PORT": str(port)},
    )
    wait_until(lambda: value(scrape(port), "worker_children") == concurrency, 30, 0.1, "children")
    return worker, port
