"""Metrics without a worker: the outcome a child reports, the main process's request hooks,
refusals, the gauges read from Redis, and the exposition."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import Mock

import fakeredis
import pytest
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.contrib.testing.mocks import TaskMessage
from celery.exceptions import Retry
from celery.utils.imports import symbol_by_name
from celery.utils.saferepr import saferepr
from celery.worker.request import create_request_cls

from worker.contracts import PUBLISHED_AT_HEADER, RECORD_VIEW
from worker.operations import backlog, gauges, metrics
from worker.runtime import instrumentation, refusals, request
from worker.runtime.envelope import Refused
from worker.runtime.outcome import Outcome, Reported, reported, split

QUEUE = "metrics-unit"


def count(task: str, outcome: str) -> float:
    found = metrics.REGISTRY.get_sample_value(
        "worker_tasks_total", {"task": task, "outcome": outcome}
    )
    return found or 0.0


def histogram_count(name: str, task: str) -> float:
    return metrics.REGISTRY.get_sample_value(f"{name}_count", {"task": task}) or 0.0


# The outcome a pool child appends to its result's repr


def test_an_outcome_rides_on_the_result_repr_and_is_split_off_again() -> None:
    value = reported(None, Outcome.DUPLICATE, 1024)
    assert isinstance(value, Reported)
    assert saferepr(value, 1024) == "None (duplicate)"
    assert split(saferepr(value, 1024)) == (Outcome.DUPLICATE, "None")
    assert split(saferepr(reported(False, Outcome.POISON, 1024), 1024)) == (Outcome.POISON, "False")


def test_a_plain_success_is_returned_as_it_is() -> None:
    assert reported(7, None, 1024) == 7
    listed = [1, "two"]
    assert reported(listed, None, 1024) is listed
    assert split("7") == (Outcome.SUCCEEDED, "7")
    assert split("'text (duplicate)'") == (Outcome.SUCCEEDED, "'text (duplicate)'")


def test_a_value_that_looks_like_an_outcome_is_reported_as_succeeded() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "odd (poison)"

    text = saferepr(reported(Odd(), None, 1024), 1024)
    assert split(text) == (Outcome.SUCCEEDED, "odd (poison)")


def test_a_long_value_keeps_its_outcome_within_celerys_repr_limit() -> None:
    text = saferepr(reported("x" * 5000, Outcome.DUPLICATE, 1024), 1024)
    assert len(text) <= 1024
    outcome, inner = split(text)
    assert outcome is Outcome.DUPLICATE
    assert inner.startswith("'xxx")


# The request hooks, in the main process


@pytest.fixture
def request_class(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Builds requests as Celery's strategy does: a subclass per task of the task's Request."""
    from worker.runtime.app import app

    app.loader.import_default_modules()
    task = app.tasks[RECORD_VIEW]
    monkeypatch.setattr(instrumentation, "enabled", lambda: True)
    lost_runs: list[str] = []
    counter = Mock(record_lost_run=lambda task_id, retries: lost_runs.append(task_id))
    monkeypatch.setattr(request, "delivery_counter", lambda: counter)
    eventer = Mock(enabled=True)
    generated = create_request_cls(
        symbol_by_name(task.Request), task, Mock(), "node", eventer, app=app
    )

    def make(**headers: Any) -> Any:
        message = TaskMessage(RECORD_VIEW, args=[1], **headers)
        message.delivery_info = {"routing_key": QUEUE, "redelivered": False}
        built = generated(
            message, app=app, task=task, eventer=eventer, on_ack=Mock(), on_reject=Mock()
        )
        built.on_accepted(1234, time.monotonic())
        return built

    make.eventer = eventer  # type: ignore[attr-defined]
    make.lost_runs = lost_runs  # type: ignore[attr-defined]
    return make


def failure(error: BaseException) -> ExceptionInfo:
    try:
        raise error
    except BaseException:
        return ExceptionInfo()


def test_each_end_of_a_run_is_counted_once_under_its_outcome(
    request_class: Callable[..., Any],
) -> None:
    before = {each: count(RECORD_VIEW, each) for each in Outcome}
    durations = histogram_count("worker_task_duration_seconds", RECORD_VIEW)

    request_class().on_success((0, "3", 0.01))
    request_class().on_success((0, "None (duplicate)", 0.01))
    request_class().on_success((0, "None (poison)", 0.01))
    request_class().on_success((1, failure(Retry("again")), None))
    request_class().on_success((1, failure(ValueError("bad input")), None))
    lost = request_class(id="died-with-its-child")
    lost.on_failure(failure(WorkerLostError("signal 9")))

    after = {each: count(RECORD_VIEW, each) - before[each] for each in Outcome}
    assert after == {
        Outcome.SUCCEEDED: 1,
        Outcome.DUPLICATE: 1,
        Outcome.POISON: 1,
        Outcome.RETRIED: 1,
        Outcome.DEAD_LETTERED: 1,
        Outcome.LOST: 1,
        Outcome.REFUSED: 0,
    }
    # A lost run has no duration; the five others do
    assert histogram_count("worker_task_duration_seconds", RECORD_VIEW) - durations == 5
    # And the lost first delivery still counts towards the poison cap
    assert request_class.lost_runs == ["died-with-its-child"]  # type: ignore[attr-defined]


def test_celery_receives_the_result_without_the_outcome(request_class: Callable[..., Any]) -> None:
    request_class().on_success((0, "None (duplicate)", 0.01))
    sent = [c for c in request_class.eventer.send.call_args_list if c.args == ("task-succeeded",)]  # type: ignore[attr-defined]
    assert sent[-1].kwargs["result"] == "None"


def test_the_queue_wait_counts_from_publish_or_from_a_later_eta(
    request_class: Callable[..., Any],
) -> None:
    waits = histogram_count("worker_task_queue_wait_seconds", RECORD_VIEW)
    total = metrics.REGISTRY.get_sample_value(
        "worker_task_queue_wait_seconds_sum", {"task": RECORD_VIEW}
    )
    now = time.time()
    request_class(**{PUBLISHED_AT_HEADER: now - 30})
    eta = datetime.fromtimestamp(now - 10, UTC).isoformat()
    request_class(**{PUBLISHED_AT_HEADER: now - 100, "eta": eta})
    request_class()  # a raw producer's message: no publish time, nothing observed
    request_class(**{PUBLISHED_AT_HEADER: "yesterday"})

    assert histogram_count("worker_task_queue_wait_seconds", RECORD_VIEW) - waits == 2
    added = (
        metrics.REGISTRY.get_sample_value(
            "worker_task_queue_wait_seconds_sum", {"task": RECORD_VIEW}
        )
        or 0.0
    ) - (total or 0.0)
    assert 40 <= added < 45  # 30 s since publish, then 10 s since the eta


def test_refusals_are_counted_under_a_known_task_or_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.runtime.app import app

    app.loader.import_default_modules()
    monkeypatch.setattr(instrumentation, "enabled", lambda: True)
    refuser = refusals.Refuser(QUEUE, max_bytes=65536, quarantine_max_entries=10)
    redis = fakeredis.FakeRedis()
    before = count(RECORD_VIEW, "refused"), count("unknown", "refused")

    for name in (RECORD_VIEW, "tasks.nobody.has_this", "x" * 200):
        refused = Refused("MalformedMessage", "bad", "sha256:0", 3, task_name=name)
        refuser.refuse(refused, b"bad", redis, publish=Mock())

    assert count(RECORD_VIEW, "refused") - before[0] == 1
    assert count("unknown", "refused") - before[1] == 2


# The gauges read from Redis


def message(published_at: float | None, task_id: str) -> str:
    headers: dict[str, Any] = {"id": task_id, "task": RECORD_VIEW}
    if published_at is not None:
        headers[PUBLISHED_AT_HEADER] = published_at
    return json.dumps({"body": "", "headers": headers, "properties": {}})


@pytest.fixture
def collector() -> Iterator[tuple[gauges.NodeCollector, Any]]:
    node = gauges.NodeCollector()
    redis = fakeredis.FakeRedis()
    node.queues, node.sample_queue, node.redis = (QUEUE,), QUEUE, redis
    node.children = lambda: 3
    yield node, redis
    redis.flushall()


def read(node: gauges.NodeCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in node.collect()
        for sample in family.samples
    }


def test_queue_gauges_count_every_priority_and_age_the_oldest_end(
    collector: tuple[gauges.NodeCollector, Any],
) -> None:
    node, redis = collector
    now = time.time()
    # kombu pushes on the left and takes from the right; a rejected message goes back left
    redis.lpush(QUEUE, message(now - 50, "oldest"), message(now - 5, "new"))
    redis.lpush(QUEUE + "\x06\x166", message(now - 20, "urgent"))
    gauge = read(node)
    assert gauge[("worker_queue_messages", (QUEUE,))] == 3
    assert 50 <= gauge[("worker_queue_oldest_age_seconds", (QUEUE,))] < 55
    assert gauge[("worker_children", ())] == 3

    redis.delete(QUEUE)
    redis.lpush(QUEUE, message(now - 5, "next"), message(now - 80, "put back"))
    node._snapshot = None  # past the cache
    assert 80 <= read(node)[("worker_queue_oldest_age_seconds", (QUEUE,))] < 85


def test_queue_gauges_are_cached_and_a_raw_message_ages_from_first_sight(
    collector: tuple[gauges.NodeCollector, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, redis = collector
    assert read(node)[("worker_queue_oldest_age_seconds", (QUEUE,))] == 0
    redis.lpush(QUEUE, message(None, "raw"))
    assert read(node)[("worker_queue_messages", (QUEUE,))] == 0  # cached for CACHE_SECONDS

    node._snapshot = None
    assert read(node)[("worker_queue_oldest_age_seconds", (QUEUE,))] == pytest.approx(0, abs=1)
    later = time.time() + 40
    monkeypatch.setattr(gauges.time, "time", lambda: later)
    node._snapshot = None
    assert 39 <= read(node)[("worker_queue_oldest_age_seconds", (QUEUE,))] <= 41


def test_the_sampled_backlog_is_served_and_keeps_ageing(
    collector: tuple[gauges.NodeCollector, Any],
) -> None:
    node, redis = collector
    assert ("worker_dead_letters", ()) not in read(node)  # nothing sampled: left out

    sampled_at = time.time() - 10
    backlog.store(redis, QUEUE, backlog.Backlog(sampled_at, 4, 2, 100.0, 9))
    node._snapshot = None
    gauge = read(node)
    assert gauge[("worker_dead_letters", ())] == 4
    assert gauge[("worker_outbox_pending", ())] == 2
    assert 110 <= gauge[("worker_outbox_oldest_age_seconds", ())] < 115
    assert gauge[("worker_view_buffer_pending_views", ())] == 9
    assert 0 < redis.ttl(backlog.sample_key(QUEUE)) <= backlog.SAMPLE_TTL


def test_a_redis_that_does_not_answer_leaves_its_gauges_out() -> None:
    node = gauges.NodeCollector()
    node.watch("redis://127.0.0.1:1/0", [QUEUE], QUEUE, lambda: 2)
    gauge = read(node)
    assert gauge[("worker_children", ())] == 2
    assert not [key for key in gauge if key[0].startswith("worker_queue")]


def test_the_exposition_is_prometheus_text_with_the_documented_names() -> None:
    metrics.count("tasks.example", "succeeded", 0.2)
    body, content_type = metrics.exposition()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert "# TYPE worker_tasks_total counter" in text
    assert 'worker_tasks_total{outcome="succeeded",task="tasks.example"}' in text
    assert "# TYPE worker_task_duration_seconds histogram" in text
    assert "# TYPE worker_task_queue_wait_seconds histogram" in text
    assert "worker_active_tasks" in text
    assert "_created" not in text
