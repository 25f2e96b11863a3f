"""Prometheus metrics of a worker node, counted and served by its main process.

Counters and histograms are updated by `worker.runtime.instrumentation` as Celery reports each
run to the main process, which no child's death can take with it. Gauges are read when scraped:
the pool from memory, the queues and the sampled backlog from Redis (`worker.operations.gauges`).
`/metrics` (`worker.operations.probes`) serves `exposition()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from worker.operations import gauges

UNKNOWN_TASK: Final = "unknown"
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
WAIT_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# No `_created` series: a scrape's size stays what the dashboards use.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # the main process's own CPU, memory and open files

TASKS: Final = Counter(
    "worker_tasks",
    "Task runs by how they ended: succeeded, duplicate (skipped by the ledger), retried, "
    "dead_lettered, refused (never run: malformed, oversized or unknown), poison, lost (the "
    "run died with its process and the message was redelivered).",
    ["task", "outcome"],
    registry=REGISTRY,
)
DURATION: Final = Histogram(
    "worker_task_duration_seconds",
    "How long runs took, from their start in a pool child to their result; lost runs left out.",
    ["task"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT: Final = Histogram(
    "worker_task_queue_wait_seconds",
    "From publish (the published_at header; its eta, if later) to the start of the run, for "
    "messages that carry the publish time.",
    ["task"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)

# Label lookups cost more than the increments: one child per label set, kept.
_counters: dict[tuple[str, str], Any] = {}
_durations: dict[str, Any] = {}
_waits: dict[str, Any] = {}


def count(task: str, outcome: str, seconds: float | None = None) -> None:
    """Count one run of `task` that ended as `outcome`, and how long it took if known."""
    counter = _counters.get((task, outcome))
    if counter is None:
        counter = _counters[(task, outcome)] = TASKS.labels(task, outcome)
    counter.inc()
    if seconds is not None:
        histogram = _durations.get(task)
        if histogram is None:
            histogram = _durations[task] = DURATION.labels(task)
        histogram.observe(seconds)


def observe_wait(task: str, seconds: float) -> None:
    """A run of `task` started `seconds` after its message was published (or due)."""
    histogram = _waits.get(task)
    if histogram is None:
        histogram = _waits[task] = QUEUE_WAIT.labels(task)
    histogram.observe(seconds)


def declare(tasks: Iterable[str], outcomes: Iterable[str]) -> None:
    """Export zero for each task and outcome, so rates and alerts see the first run too."""
    outcomes = tuple(outcomes)
    for task in tasks:
        for outcome in outcomes:
            _counters.setdefault((task, outcome), TASKS.labels(task, outcome))
        _durations.setdefault(task, DURATION.labels(task))


collector: Final = gauges.NodeCollector()
REGISTRY.register(collector)


def exposition() -> tuple[bytes, str]:
    """The node's metrics in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
