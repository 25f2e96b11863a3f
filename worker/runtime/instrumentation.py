"""Counts each run where Celery reports its end: in the worker's main process.

`DatabaseRequest` (`worker.runtime.request`) calls these as results arrive from pool children,
and `worker.runtime.refusals` for each message refused unrun; `worker.operations.metrics` holds
the figures and serves them. A pool child adds only the outcome Celery cannot see (a duplicate,
a poison message) to its result (`worker.runtime.outcome`). Off when WORKER_HTTP_PORT=0 (no
server would show them): nothing is counted and children report nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from functools import cache, wraps
from time import time
from typing import Any

from celery import Celery
from celery.exceptions import Retry, Terminated
from celery.signals import worker_ready

from worker.config import get_settings
from worker.contracts import PUBLISHED_AT_HEADER, is_timestamp
from worker.operations import metrics, probes
from worker.runtime.outcome import Outcome, split

# What a task run can end as, counted per task (refusals are counted per message).
RUN_OUTCOMES = tuple(each for each in Outcome if each is not Outcome.REFUSED)


@cache
def enabled() -> bool:
    """Metrics are on unless WORKER_HTTP_PORT=0 turns off the server that shows them."""
    return get_settings().worker_http_port != 0


@cache
def _app() -> Celery:
    from worker.celery_app import app

    return app


def task_label(name: object) -> str:
    """`name` if this worker has such a task, else "unknown": names off the wire stay bounded."""
    if isinstance(name, str) and name in _app().tasks:
        return name
    return metrics.UNKNOWN_TASK


def refused(task_name: object) -> None:
    """A message was refused unrun (malformed, oversized, unknown task)."""
    if enabled():
        metrics.count(task_label(task_name), Outcome.REFUSED)


def started(request: Any) -> None:
    """A child took the run (`on_accepted`): how long its message waited since it was due."""
    headers = request.request_dict
    published_at = headers.get(PUBLISHED_AT_HEADER)
    if not is_timestamp(published_at):
        return  # a producer that does not stamp its messages
    due = float(published_at)
    eta = headers.get("eta")
    if isinstance(eta, str):  # held until then on purpose: the wait counts from there
        with contextlib.suppress(ValueError):
            due = max(due, datetime.fromisoformat(eta).timestamp())
    metrics.observe_wait(request.name, max(0.0, request.time_start - due))


def finished(request: Any, outcome: Outcome, seconds: float | None = None) -> None:
    """A run of `request` ended as `outcome`, `seconds` after it started."""
    if seconds is None and outcome is not Outcome.LOST:
        seconds = _elapsed(request)
    metrics.count(request.name, outcome, seconds)


def failed(request: Any, error: BaseException, lost: bool) -> None:
    """A run ended in an error (`on_failure`): its process died, or it was dead-lettered."""
    if lost:
        finished(request, Outcome.LOST)
    elif not isinstance(error, Retry | Terminated | SystemExit | KeyboardInterrupt):
        # DatabaseTask dead-letters every error it raises but Retry (counted by on_retry);
        # a revoked or cancelled run is no end of the message.
        finished(request, Outcome.DEAD_LETTERED)


def counting_success(on_success: Callable[..., Any]) -> Callable[..., Any]:
    """`on_success` that first counts the run, with the outcome the child appended split off."""

    @wraps(on_success)
    def counted(request: Any, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        failed, retval, runtime = failed__retval__runtime
        if not failed:  # a failure goes on to on_failure or on_retry, which count it
            outcome, retval = split(retval)
            finished(request, outcome, runtime)
            failed__retval__runtime = (failed, retval, runtime)
        return on_success(request, failed__retval__runtime, **kwargs)

    return counted


def _elapsed(request: Any) -> float | None:
    started_at = getattr(request, "time_start", None)
    return None if not started_at else max(0.0, time() - started_at)


def _children(pool: Any) -> Callable[[], int | None]:
    def children() -> int | None:
        processes = getattr(getattr(pool, "_pool", None), "_pool", None)
        return len(processes) if isinstance(processes, list) else None

    return children


@worker_ready.connect
def _watch_node(sender: Any, **_: Any) -> None:
    if not enabled():
        return
    settings = get_settings()
    queues = [queue.name for queue in sender.task_consumer.queues]
    metrics.collector.watch(
        settings.redis_url.get_secret_value(), queues, settings.task_queue, _children(sender.pool)
    )
    # Zero for every run outcome of every task this worker counts: rates see the first one.
    from worker.runtime.task import DatabaseTask

    counted = [name for name, task in sender.app.tasks.items() if isinstance(task, DatabaseTask)]
    metrics.declare(counted, RUN_OUTCOMES)
    metrics.declare([metrics.UNKNOWN_TASK], [Outcome.REFUSED])


def install() -> None:
    """Serve the metrics at /metrics, unless they are off."""
    if enabled():
        probes.set_metrics_source(metrics.exposition)
