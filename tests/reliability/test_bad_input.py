"""Bad input from a plain producer: refused or dead-lettered once, never retried, never run."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from tests.livecelery import LiveStack, wait_until
from tests.reliability.helpers import add_posts, failure_count, processed_ids, views

pytestmark = pytest.mark.integration

RECORD_VIEW = "tasks.posts.record_view"


class CreatesFileWhenUnpickled:
    """Unpickling this runs code: it opens (creates) `path` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def publish_pickle(url: str, queue: str, task_id: str, payload: bytes) -> None:
    """A Celery protocol 2 message for record_view whose body is a pickle."""
    headers = {"lang": "py", "task": RECORD_VIEW, "id": task_id, "retries": 0}
    headers |= {"argsrepr": "(...)", "kwargsrepr": "{}", "timelimit": [None, None]}
    with Connection(url) as connection:
        connection.Producer().publish(
            payload,
            routing_key=queue,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers=headers,
        )


def dead_letters(engine: Engine) -> dict[str, tuple[str, int, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT task_id, error_class, attempts, args, error_message FROM task_failures")
        ).all()
    return {
        row.task_id: (row.error_class, row.attempts, row.args, row.error_message) for row in rows
    }


def test_bad_messages_are_dead_lettered_once_and_the_worker_keeps_going(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path
) -> None:
    # Given a post, a worker, and a pickle payload that creates a file when unpickled
    (post,) = add_posts(live_db, 1)
    worker = live_stack.start_worker(concurrency=1)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(((CreatesFileWhenUnpickled(marker),), {}, {}))
    pickle.loads(payload)[0][0].close()  # noqa: S301 - control: it really runs code
    assert marker.exists()
    marker.unlink()
    bad: dict[str, tuple[str, list[Any], dict[str, Any]]] = {
        "string": (RECORD_VIEW, [str(post)], {}),
        "bool": (RECORD_VIEW, [True], {}),
        "float": (RECORD_VIEW, [float(post)], {}),
        "none": (RECORD_VIEW, [None], {}),
        "list": (RECORD_VIEW, [[post]], {}),
        "unknown-kwarg": (RECORD_VIEW, [], {"post_id": post, "extra": 1}),
        "missing": (RECORD_VIEW, [], {}),
        "too-many": (RECORD_VIEW, [post, post], {}),
        "too-large": (RECORD_VIEW, ["x" * 70_000], {}),
        "unknown-task": ("tasks.posts.drop_table", [post], {}),
    }

    # When they are sent by name from a plain producer, with a pickle message, then a good one
    with live_stack.producer() as client:
        for task_id, (name, args, kwargs) in bad.items():
            client.send_task(name, args, kwargs, task_id=task_id, queue=live_stack.queue)
        publish_pickle(live_stack.env["REDIS_URL"], live_stack.queue, "pickled", payload)
        live_stack.send(client, RECORD_VIEW, post, task_id="good")

    # Then every bad message is dead-lettered once, with what was wrong, and none was retried
    wait_until(lambda: failure_count(live_db) >= len(bad) + 1, 60, what="all dead letters")
    wait_until(lambda: views(live_db, post) == 1, 60, what="the good view")
    letters = dead_letters(live_db)
    assert set(letters) == {*bad, "pickled"}
    assert {attempts for _, attempts, _, _ in letters.values()} == {1}
    classes = {task_id: error_class for task_id, (error_class, *_) in letters.items()}
    assert classes == {
        **dict.fromkeys(bad, "InvalidTaskArguments"),
        "too-large": "MessageTooLarge",
        "unknown-task": "NotRegistered",
        "pickled": "ContentDisallowed",
    }
    assert "post_id" in letters["string"][3]
    assert letters["bool"][2] == [True]  # the arguments as sent, for inspection
    # And the oversized and pickled bodies were never decoded: no arguments recorded
    assert "exceeds MAX_MESSAGE_BYTES=65536" in letters["too-large"][3]
    assert letters["too-large"][2] == letters["pickled"][2] == []
    assert not marker.exists()
    assert processed_ids(live_db) == {"good"}
    assert "transient" not in worker.log()
