"""What an enqueue costs an API request: the typed client call vs a raw `send_task`.

    .venv/bin/python -m benchmarks.enqueue_cost [--calls 2000] [--redis-url URL]

Both publish the same `record_view` message through one Celery app to a queue of the run's own
on the configured Redis (deleted afterwards; no worker needed). Calls are interleaved in small
rounds so both see the same machine noise. Prints median and p90 microseconds per call.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import redis

from worker.config import get_settings, mask_url
from worker.contracts import RECORD_VIEW
from worker.development.live import producer
from worker.producer.client import TaskClient, build_message

ROUND = 100


def timed(call: Callable[[], object], times: list[float]) -> None:
    started = time.perf_counter_ns()
    call()
    times.append((time.perf_counter_ns() - started) / 1000)


def measure(calls: int, broker_url: str) -> dict[str, list[float]]:
    queue = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    app = producer(broker_url, queue)
    client = TaskClient(app)
    variants: dict[str, Callable[[], object]] = {
        "raw send_task": lambda: app.send_task(RECORD_VIEW, args=[42]),
        "client.record_view": lambda: client.record_view(42),
        "  of which: checks only": lambda: build_message(RECORD_VIEW, kwargs={"post_id": 42}),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    connection = redis.Redis.from_url(broker_url)
    try:
        for call in variants.values():  # warm-up: connection pool, pydantic, imports
            for _ in range(ROUND):
                call()
        for done in range(0, calls, ROUND):
            for name, call in variants.items():
                for _ in range(min(ROUND, calls - done)):
                    timed(call, times[name])
            connection.delete(queue)  # keep Redis memory flat
    finally:
        connection.delete(queue)
        connection.close()
        app.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant")
    parser.add_argument("--redis-url", default=None, help="default: REDIS_URL")
    options = parser.parse_args()
    broker_url = options.redis_url or get_settings().redis_url.get_secret_value()
    times = measure(options.calls, broker_url)
    baseline = statistics.median(times["raw send_task"])
    print(f"enqueue cost, {options.calls} calls each, broker {mask_url(broker_url)}")
    print(f"{'variant':<26}{'median us':>11}{'p90 us':>10}{'vs raw':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<26}{median:>11.1f}{p90:>10.1f}{median / baseline:>8.2f}x")


if __name__ == "__main__":
    main()
