"""Faults i and j: bad arguments among good tasks, and messages that are not JSON."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection
from sqlalchemy import Engine, text

from tests.faults.scenario import (
    RECORD_VIEW,
    add_posts,
    log_count,
    processed,
    views_by_post,
    wait_for_count,
)
from tests.livecelery import LiveStack, wait_until
from worker.development.services import RedisServer

pytestmark = pytest.mark.faults

GOOD = 100


def bad_messages(post: int) -> dict[str, tuple[str, list[Any], dict[str, Any]]]:
    """Task id -> (task name, args, kwargs) of every kind of bad input of issue #3, section 4."""
    return {
        "bad-bool": (RECORD_VIEW, [True], {}),
        "bad-string": (RECORD_VIEW, [str(post)], {}),
        "bad-float": (RECORD_VIEW, [float(post)], {}),
        "bad-none": (RECORD_VIEW, [None], {}),
        "bad-list": (RECORD_VIEW, [[post]], {}),
        "bad-object": (RECORD_VIEW, [{"id": post}], {}),
        "bad-zero": (RECORD_VIEW, [0], {}),
        "bad-negative": (RECORD_VIEW, [-1], {}),
        "bad-above-bigint": (RECORD_VIEW, [2**63], {}),
        "bad-missing": (RECORD_VIEW, [], {}),
        "bad-too-many": (RECORD_VIEW, [post, post], {}),
        "bad-unknown-kwarg": (RECORD_VIEW, [], {"post_id": post, "user_id": 1}),
        "bad-misnamed-kwarg": (RECORD_VIEW, [], {"id": post}),
        "bad-twice": (RECORD_VIEW, [post], {"post_id": post}),
        "bad-user-id": ("tasks.users.deactivate_user", ["1"], {}),
        "bad-oversized": (RECORD_VIEW, [post], {"padding": "x" * 100_000}),
        "bad-unknown-task": ("tasks.posts.delete_everything", [post], {}),
    }


def dead_letters(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT task_id, error_class, attempts FROM task_failures"))
        return {row.task_id: (row.error_class, row.attempts) for row in rows}


def test_i_bad_inputs_among_100_good_tasks_are_each_dead_lettered_once(
    stack: LiveStack, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 10 posts and a worker
    posts = add_posts(db, 10)
    worker = stack.start_worker(concurrency=2)
    bad = bad_messages(posts[0])

    # When 100 good record_view messages are sent with every kind of bad one mixed in
    with stack.producer() as client:
        queue = list(bad.items())
        for i in range(GOOD):
            stack.send(client, RECORD_VIEW, posts[i % 10], task_id=f"good-{i}")
            if i % 5 == 0 and queue:
                task_id, (name, args, kwargs) = queue.pop()
                client.send_task(name, args, kwargs, task_id=task_id, queue=stack.queue)
    wait_for_count(db, GOOD, timeout=120)
    wait_until(lambda: len(dead_letters(db)) >= len(bad), 60, 0.1, "every bad message")

    # Then the good ones were applied, and each bad one was dead-lettered once, never retried
    letters = dead_letters(db)
    classes = sorted({error_class for error_class, _ in letters.values()})
    retries = log_count(worker, r"\[bad-[a-z-]+\] transient")
    figure(
        f"FAULT i: {processed(db)}/{GOOD} good applied; {len(letters)}/{len(bad)} bad "
        f"dead-lettered, attempts {sorted({a for _, a in letters.values()})}, "
        f"{retries} retries ({', '.join(classes)})"
    )
    assert queue == []
    assert views_by_post(db) == dict.fromkeys(posts, GOOD // 10)
    assert processed(db) == GOOD
    assert set(letters) == set(bad)
    assert {attempts for _, attempts in letters.values()} == {1}
    assert retries == 0


class CreatesFileWhenUnpickled:
    """A payload whose unpickling runs code: it opens (creates) `path` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def publish_raw(url: str, queue: str, task_id: str, body: bytes, content_type: str) -> None:
    """Publish a Celery protocol 2 task message with a body of any content type, via kombu."""
    headers = {
        "lang": "py",
        "task": RECORD_VIEW,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "(...)",
        "kwargsrepr": "{}",
        "origin": "fault-test",
    }
    with Connection(url) as connection:
        connection.Producer().publish(
            body,
            routing_key=queue,
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
            correlation_id=task_id,
        )


def test_j_pickle_and_yaml_messages_are_refused_without_running_their_code(
    stack: LiveStack, broker: RedisServer, db: Engine, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    # Given a worker, and message bodies whose deserialization would create a file
    post = add_posts(db, 1)[0]
    worker = stack.start_worker(concurrency=1)
    pickled_marker, yaml_marker = tmp_path / "pickle-ran", tmp_path / "yaml-ran"
    payload = pickle.dumps(((CreatesFileWhenUnpickled(pickled_marker),), {}, {}))
    # As a control, unpickling it here really creates the file
    pickle.loads(payload)[0][0].close()  # noqa: S301
    assert pickled_marker.exists()
    pickled_marker.unlink()
    yaml_body = f"!!python/object/apply:builtins.open ['{yaml_marker}', 'w']".encode()

    # When both are published straight to the queue, followed by a good task
    publish_raw(broker.url, stack.queue, "pickled", payload, "application/x-python-serialize")
    publish_raw(broker.url, stack.queue, "yaml", yaml_body, "application/x-yaml")
    with stack.producer() as client:
        stack.send(client, RECORD_VIEW, post, task_id="after-pickle")
    wait_for_count(db, 1, timeout=60)

    # Then both were refused before deserialization, the files never appeared,
    # and the worker went on to the good task
    refused = log_count(worker, r"refused message .* ContentDisallowed: content type")
    letters = dead_letters(db)
    client = redis.Redis.from_url(broker.url)
    left = client.llen(stack.queue)
    client.close()
    figure(
        f"FAULT j: pickle + yaml messages refused ({refused} refusals logged, dead letters "
        f"{sorted(letters)}), marker files absent, next task applied "
        f"({views_by_post(db)[post]} view), {left} left in queue"
    )
    assert not pickled_marker.exists()
    assert not yaml_marker.exists()
    assert refused == 2
    assert views_by_post(db) == {post: 1}
    assert left == 0
    assert {task_id: attempts for task_id, (_, attempts) in letters.items()} == {
        "pickled": 1,
        "yaml": 1,
    }
