"""Bad input from a plain producer among good tasks: dead-lettered once, never retried or run."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from kombu import Connection
from sqlalchemy import Engine

from tests.envelopes import kombu_message
from tests.steps import (
    RECORD_VIEW,
    add_posts,
    failures,
    log_count,
    processed,
    views,
    views_by_post,
)
from worker.development.live import LiveStack, wait_until

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


def test_bad_inputs_among_100_good_tasks_are_each_dead_lettered_once(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 10 posts and a worker
    posts = add_posts(live_db, 10)
    worker = live_stack.start_worker(concurrency=2)
    bad = bad_messages(posts[0])

    # When 100 good record_view messages are sent by name with every kind of bad one mixed in
    with live_stack.producer() as client:
        queue = list(bad.items())
        for i in range(GOOD):
            live_stack.send(client, RECORD_VIEW, posts[i % 10], task_id=f"good-{i}")
            if i % 5 == 0 and queue:
                task_id, (name, args, kwargs) = queue.pop()
                client.send_task(name, args, kwargs, task_id=task_id, queue=live_stack.queue)
    wait_until(lambda: processed(live_db) >= GOOD, 120, 0.1, "every good message")
    wait_until(lambda: len(failures(live_db)) >= len(bad), 60, 0.1, "every bad message")

    # Then the good ones were applied, and each bad one was dead-lettered once, never retried,
    # with what was wrong and the arguments as sent
    letters = failures(live_db)
    classes = {task_id: letter["error_class"] for task_id, letter in letters.items()}
    retries = log_count(worker, r"\[bad-[a-z-]+\] transient")
    figure(
        f"FAULT i: {processed(live_db)}/{GOOD} good applied; {len(letters)}/{len(bad)} bad "
        f"dead-lettered, attempts {sorted({row['attempts'] for row in letters.values()})}, "
        f"{retries} retries ({', '.join(sorted(set(classes.values())))})"
    )
    assert queue == []
    assert views_by_post(live_db) == dict.fromkeys(posts, GOOD // 10)
    assert processed(live_db) == GOOD
    assert classes == {
        **dict.fromkeys(bad, "InvalidTaskArguments"),
        "bad-oversized": "MessageTooLarge",
        "bad-unknown-task": "NotRegistered",
    }
    assert {letter["attempts"] for letter in letters.values()} == {1}
    assert retries == 0
    assert "post_id" in letters["bad-string"]["error_message"]
    assert letters["bad-bool"]["args"] == [True]
    # The oversized body was never decoded: no arguments recorded
    assert "exceeds MAX_MESSAGE_BYTES=65536" in letters["bad-oversized"]["error_message"]
    assert letters["bad-oversized"]["args"] == []


class CreatesFileWhenUnpickled:
    """A payload whose unpickling runs code: it opens (creates) `path` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def publish_raw(url: str, queue: str, task_id: str, body: bytes, content_type: str) -> None:
    """Publish a Celery protocol 2 task message with a body of any content type, via kombu."""
    headers = kombu_message(queue, task_id, headers={"lang": "py", "argsrepr": "(...)"})["headers"]
    with Connection(url) as connection:
        connection.Producer().publish(
            body,
            routing_key=queue,
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
            correlation_id=task_id,
        )


def test_pickle_and_yaml_messages_are_refused_without_running_their_code(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    # Given a worker, and message bodies whose deserialization would create a file
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=1)
    pickled_marker, yaml_marker = tmp_path / "pickle-ran", tmp_path / "yaml-ran"
    payload = pickle.dumps(((CreatesFileWhenUnpickled(pickled_marker),), {}, {}))
    # As a control, unpickling it here really creates the file
    pickle.loads(payload)[0][0].close()  # noqa: S301
    assert pickled_marker.exists()
    pickled_marker.unlink()
    yaml_body = f"!!python/object/apply:builtins.open ['{yaml_marker}', 'w']".encode()

    # When both are published straight to the queue, followed by a good task
    url, queue = live_stack.redis_url, live_stack.queue
    publish_raw(url, queue, "pickled", payload, "application/x-python-serialize")
    publish_raw(url, queue, "yaml", yaml_body, "application/x-yaml")
    with live_stack.producer() as client:
        live_stack.send(client, RECORD_VIEW, post, task_id="after-pickle")
    wait_until(lambda: views(live_db, post) == 1, 60, 0.1, "the good view")
    wait_until(lambda: len(failures(live_db)) == 2, 60, 0.1, "both dead letters")

    # Then both were refused before deserialization, the files never appeared,
    # and the worker went on to the good task
    refused = log_count(worker, r"refused message .* ContentDisallowed: content type")
    letters = failures(live_db)
    client = redis.Redis.from_url(url)
    left = client.llen(queue)
    client.close()
    figure(
        f"FAULT j: pickle + yaml messages refused ({refused} refusals logged, dead letters "
        f"{sorted(letters)}), marker files absent, next task applied "
        f"({views(live_db, post)} view), {left} left in queue"
    )
    assert not pickled_marker.exists()
    assert not yaml_marker.exists()
    assert refused == 2
    assert views_by_post(live_db) == {post: 1}
    assert left == 0
    assert {task_id: (row["error_class"], row["attempts"]) for task_id, row in letters.items()} == {
        "pickled": ("ContentDisallowed", 1),
        "yaml": ("ContentDisallowed", 1),
    }
    assert letters["pickled"]["args"] == []  # never decoded
