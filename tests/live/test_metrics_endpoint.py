"""/metrics of a real prefork worker: each outcome counted once, queue waits, gauges, the switch."""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis
from sqlalchemy import Engine

from tests.live.metrics_scrape import Samples, metrics_worker, outcomes, scrape, value
from tests.steps import add_posts, lock_waiters, row_locked, total_views
from worker.contracts import PUBLISHED_AT_HEADER, RECORD_VIEW, SAMPLE_METRICS
from worker.development.live import LiveStack, wait_until
from worker.producer import viewbuffer
from worker.producer.client import TaskClient

pytestmark = pytest.mark.integration


def test_each_run_is_counted_once_by_how_it_ended(live_stack: LiveStack, live_db: Engine) -> None:
    # Given two posts and a worker serving /metrics
    post, other = add_posts(live_db, 2)
    worker, port = metrics_worker(live_stack)
    before = scrape(port)
    assert outcomes(before, RECORD_VIEW) == {}  # declared at zero, so rates see the first run
    assert value(before, "worker_tasks_total", task=RECORD_VIEW, outcome="duplicate") == 0

    # When an API publishes 5 views with the typed client, one of them twice, a view of a
    # post that does not exist, and a task this worker does not have
    with live_stack.producer() as client:
        typed = TaskClient(client)
        for i in range(5):
            typed.record_view(post if i % 2 else other, task_id=f"view-{i}")
        typed.record_view(post, task_id="view-0")
        typed.record_view(999_999, task_id="missing-post")
        live_stack.send(client, "tasks.nobody.has_this", 1)

    # Then each message is counted once, under the outcome it had
    def counted() -> dict[str, float] | None:
        samples = scrape(port)
        found = outcomes(samples, RECORD_VIEW)
        refused = value(samples, "worker_tasks_total", task="unknown", outcome="refused")
        return found if sum(found.values()) == 7 and refused == 1 else None

    assert wait_until(counted, 60, 0.2, "7 record_view runs and 1 refusal counted") == {
        "succeeded": 5,
        "duplicate": 1,
        "dead_lettered": 1,
    }
    assert total_views(live_db) == 5
    samples = scrape(port)
    # And the typed client stamped each message, so every run's queue wait was measured
    wait_count = value(samples, "worker_task_queue_wait_seconds_count", task=RECORD_VIEW)
    duration_count = value(samples, "worker_task_duration_seconds_count", task=RECORD_VIEW)
    assert (wait_count, duration_count) == (7, 7)
    wait_sum = value(samples, "worker_task_queue_wait_seconds_sum", task=RECORD_VIEW)
    assert wait_sum is not None
    assert 0 <= wait_sum < 60
    # And the node's gauges: two children, nothing running, nothing waiting
    assert value(samples, "worker_children") == 2
    assert value(samples, "worker_active_tasks") == 0
    assert value(samples, "worker_queue_messages", queue=live_stack.queue) == 0
    # And no label carries a task id or a host name
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not labels & {"view-0", "missing-post", worker.node, worker.node.split("@")[1]}
    assert not {v for v in labels if v.startswith("tasks.nobody")}


def test_queue_gauges_read_the_oldest_message_from_redis(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a worker whose one child is busy with a task waiting on a row the test keeps
    # locked, prefetching nothing more: it takes no message from the queue. (Cancelling its
    # consumer instead races with a BRPOP already sent: kombu puts a message that BRPOP
    # takes back at the head of the list, which can be in the middle once others follow.)
    (post,) = add_posts(live_db, 1)
    _, port = metrics_worker(live_stack, concurrency=1, env={"WORKER_PREFETCH_MULTIPLIER": "1"})
    app_name = live_stack.env["APP_NAME"]
    with live_stack.producer() as client, row_locked(live_db, post):
        typed = TaskClient(client)
        typed.record_view(post)
        wait_until(lambda: lock_waiters(live_db, app_name), 60, 0.05, "the busy child")

        # When a message published 90 seconds ago waits with two fresh ones
        old = time.time() - 90
        client.send_task(
            RECORD_VIEW,
            kwargs={"post_id": post},
            queue=live_stack.queue,
            headers={PUBLISHED_AT_HEADER: old},
        )
        typed.record_view(post)
        typed.record_view(post)

        # Then /metrics shows three messages, the oldest about 90 seconds old (cached: polled)
        def gauges() -> tuple[float | None, float | None]:
            samples = scrape(port)
            messages = value(samples, "worker_queue_messages", queue=live_stack.queue)
            age = value(samples, "worker_queue_oldest_age_seconds", queue=live_stack.queue)
            return messages, age

        # The gauges are cached for a few seconds: a read made while the messages were being
        # published may still be served, so wait for one that saw all three.
        _, age = wait_until(
            lambda: (read := gauges())[0] == 3 and read, 30, 0.2, "three waiting messages"
        )
        assert age is not None
        assert 90 <= age < 120


def test_the_sampled_gauges_come_from_the_sampling_task(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a dead letter (a view of a post that does not exist) and views buffered in Redis
    _, port = metrics_worker(live_stack)
    redis = Redis.from_url(live_stack.redis_url)
    with live_stack.producer() as client:
        TaskClient(client).record_view(424_242)
        wait_until(
            lambda: outcomes(scrape(port), RECORD_VIEW).get("dead_lettered"), 30, 0.2, "a failure"
        )
        viewbuffer.record_views(redis, {1: 3, 2: 4}, queue=live_stack.queue)
        assert value(scrape(port), "worker_dead_letters") is None  # nothing sampled yet

        # When beat's sampling task runs (sent here by name)
        live_stack.send(client, SAMPLE_METRICS)

    # Then the main process serves what the child sampled
    def sampled() -> Samples | None:
        samples = scrape(port)
        return samples if value(samples, "worker_dead_letters") is not None else None

    samples = wait_until(sampled, 30, 0.2, "the sampled gauges")
    assert value(samples, "worker_dead_letters") == 1
    assert value(samples, "worker_outbox_pending") == 0
    assert value(samples, "worker_outbox_oldest_age_seconds") == 0
    assert value(samples, "worker_view_buffer_pending_views") == 7
    stored = redis.hgetall("metrics:{" + live_stack.queue + "}:backlog")
    assert json.loads(stored[b"dead_letters"]) == 1
    assert 0 < redis.ttl("metrics:{" + live_stack.queue + "}:backlog") <= 60
    redis.close()
