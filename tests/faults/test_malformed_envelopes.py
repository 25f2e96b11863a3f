"""Malformed bytes pushed straight into a live worker's queue: none stops it, none is lost."""

from __future__ import annotations

from collections.abc import Callable

import redis
from sqlalchemy import Engine

from tests.envelopes import kombu_message, malformed_messages, raw
from tests.steps import RECORD_VIEW, add_posts, failures, processed, views_by_post
from worker.development.live import LiveStack, wait_until
from worker.development.servers import RedisServer
from worker.runtime import quarantine

# Published on the fanout channel Celery's remote control listens to (kombu: "/<db>.<exchange>").
BROADCAST_JUNK = [
    b"not json",
    b"[]",
    b"{}",
    b'{"properties": {}}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"body": "%%%", "properties": {"delivery_tag": "x", "body_encoding": "base64", '
    b'"delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}}}',
]


def dead_letters(engine: Engine) -> dict[str, str]:
    return {task_id: row["error_class"] for task_id, row in failures(engine).items()}


def matches(expected: str, actual: str) -> bool:
    return actual.startswith(expected[:-1]) if expected.endswith("*") else actual == expected


def test_malformed_bytes_pushed_into_the_queue_never_stop_the_worker_and_each_is_kept(
    stack: LiveStack, broker: RedisServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given a worker, and every kind of malformed message a raw producer can push
    (post,) = add_posts(db, 1)
    worker = stack.start_worker(concurrency=2)
    bad = malformed_messages(stack.queue, post)
    client = redis.Redis.from_url(broker.url)

    # When each is pushed into the queue by hand, followed by two good messages
    # (the second of each pair hand-written too, as a producer in another language would)
    good = 0
    with stack.producer() as producer:
        for case in bad:
            client.lpush(stack.queue, case.raw)
            stack.send(producer, RECORD_VIEW, post, task_id=f"good-{good}")
            client.lpush(stack.queue, raw(kombu_message(stack.queue, f"good-{good + 1}", [post])))
            good += 2
    quarantined = len(
        [c for c in bad if c.dead_letter_id is None]
    )  # messages without any id to keep
    wait_until(lambda: processed(db) >= good, 120, 0.2, "every good message")
    wait_until(
        lambda: (
            len(dead_letters(db)) >= len(bad) - quarantined
            and quarantine.count(client, stack.queue) >= quarantined
        ),
        60,
        0.2,
        "every bad message kept",
    )

    # Then the main process never exited, every good message was applied exactly once ...
    letters = dead_letters(db)
    kept = quarantine.entries(client, stack.queue, limit=1000)
    assert worker.running(), worker.log()
    assert "Unrecoverable error" not in worker.log()
    assert views_by_post(db) == {post: good}
    assert processed(db) == good
    # ... and every bad one is a dead letter under its (salvaged) id, or quarantined raw
    expected_dead = [case for case in bad if case.dead_letter_id is not None]
    assert len(letters) == len(expected_dead)
    for case in expected_dead:
        assert case.dead_letter_id is not None
        found = [i for i, cls in letters.items() if matches(case.dead_letter_id, i)]
        assert len(found) >= 1, case.name
        assert any(letters[i] == case.error_class for i in found), (case.name, letters)
    assert sorted(entry.raw for entry in kept) == sorted(
        case.raw for case in bad if case.dead_letter_id is None
    )
    # ... with one WARNING line each, naming the reason and a digest
    assert worker.log().count("WARNING") >= len(bad)
    assert worker.log().count("refused message") == len(bad)
    # Nothing is left in the queue or among the unacknowledged messages
    assert client.llen(stack.queue) == 0
    wait_until(lambda: client.hlen("unacked") == 0, 30, 0.1, "no unacknowledged message")

    # And garbage broadcast on the remote-control channel stops nothing: inspect still answers
    for junk in BROADCAST_JUNK:
        client.publish("/0.celery.pidbox", junk)
    assert stack.inspect(worker, "ping").returncode == 0
    assert worker.running()

    # And a second worker started afterwards finds an empty queue, stays up and works
    assert worker.stop() == 0
    second = stack.start_worker(concurrency=1)
    stack_views = views_by_post(db)[post]
    with stack.producer() as producer:
        stack.send(producer, RECORD_VIEW, post, task_id="after-restart")
    wait_until(lambda: views_by_post(db)[post] == stack_views + 1, 60, 0.2, "the next view")
    assert second.running()
    assert "refused message" not in second.log()
    client.close()
    figure(
        f"FAULT malformed envelopes: {len(bad)} kinds pushed among {good} good messages; "
        f"{good}/{good} good applied once; {len(letters)} dead-lettered, {len(kept)} quarantined; "
        "worker never exited; second worker found an empty queue"
    )
