"""The typed client: checked calls, JSON messages by name, eager mode, idempotency keys."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.database.producer import Producer
from worker.contracts import InvalidTaskArguments
from worker.development.live import forget_queue
from worker.development.live import producer as celery_producer
from worker.development.processes import run_python
from worker.models import Post, ProcessedTask, User
from worker.producer.client import TaskClient, tasks


def test_typed_calls_publish_json_messages_by_name(producer: Producer) -> None:
    client = producer.client
    ids = [
        client.record_view(42),
        client.deactivate_user(7, task_id="deactivate-7"),
        client.deactivate_dormant_users(),
        client.send("tasks.users.deactivate_dormant_users", kwargs={"inactive_days": 30}),
        client.record_view(43, countdown=60),
    ]

    queued = producer.messages()
    assert [m.id for m in queued] == ids
    assert ids[1] == "deactivate-7"
    assert [(m.task, m.args, m.kwargs) for m in queued] == [
        ("tasks.posts.record_view", [], {"post_id": 42}),
        ("tasks.users.deactivate_user", [], {"user_id": 7}),
        ("tasks.users.deactivate_dormant_users", [], {"inactive_days": 365}),
        ("tasks.users.deactivate_dormant_users", [], {"inactive_days": 30}),
        ("tasks.posts.record_view", [], {"post_id": 43}),
    ]
    assert {m.content_type for m in queued} == {"application/json"}
    assert [m.eta is not None for m in queued] == [False, False, False, False, True]


def test_eta_and_queue_options_reach_the_message(producer: Producer, live_redis_url: str) -> None:
    eta = datetime.now(UTC) + timedelta(minutes=5)
    other = Producer(producer.client, live_redis_url, f"{producer.queue}-other")
    try:
        producer.client.record_view(1, eta=eta, queue=other.queue)
        [message] = other.messages()
    finally:
        forget_queue(live_redis_url, other.queue)
    assert producer.messages() == []
    assert datetime.fromisoformat(str(message.eta)) == eta


BAD_CALLS: list[tuple[Callable[[TaskClient], object], str]] = [
    (lambda c: c.record_view("1"), r"post_id: Input should be a valid integer, got '1' \(str\)"),
    (lambda c: c.record_view(True), "post_id"),
    (lambda c: c.record_view(0), "post_id: Input should be greater than or equal to 1"),
    (lambda c: c.deactivate_user(2**63), "user_id: Input should be less than or equal to"),
    (lambda c: c.deactivate_user(None), "user_id"),
    (lambda c: c.deactivate_dormant_users(0), "inactive_days"),
    (lambda c: c.send("tasks.posts.nope", [1]), "unknown task name 'tasks.posts.nope'"),
    (lambda c: c.send("tasks.posts.record_view", [1], {"extra": 2}), "extra"),
    (lambda c: c.record_view(1, countdown=-1), "countdown must be between 0 and"),
    (lambda c: c.record_view(1, countdown=10**9), "BROKER_VISIBILITY_TIMEOUT"),
    (lambda c: c.record_view(1, countdown="5"), "countdown must be a number"),
    (lambda c: c.record_view(1, eta=datetime.now()), "eta must be a timezone-aware datetime"),
    (
        lambda c: c.record_view(1, countdown=1, eta=datetime.now(UTC)),
        "give countdown or eta, not both",
    ),
    (lambda c: c.record_view(1, queue="no spaces"), "queue must be"),
    (lambda c: c.record_view(1, task_id=""), "task_id must be"),
    (lambda c: c.record_view(1, task_id="x" * 256), "task_id must be 1-255"),
    (lambda c: c.record_view(1, task_id="has space"), "task_id must be"),
    (lambda c: c.record_view(1, priority=9), "unknown option"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_calls_fail_in_the_caller_and_publish_nothing(
    producer: Producer, call: Callable[[TaskClient], object], message: str
) -> None:
    with pytest.raises(InvalidTaskArguments, match=message):
        call(producer.client)
    assert producer.messages() == []


def test_importing_the_client_loads_no_task_module_and_no_engine(live_redis_url: str) -> None:
    queue = f"api-light-{uuid.uuid4().hex[:8]}"
    script = (
        "import json, sys\n"
        "from worker.client import tasks\n"
        "task_id = tasks.record_view(5)\n"
        "import worker.db\n"
        "loaded = sorted(m for m in sys.modules if m == 'tasks' or m.startswith('tasks.'))\n"
        "print(json.dumps({'loaded': loaded, 'engine': worker.db._engine.current() is not None,"
        " 'task_id': task_id}))\n"
    )
    env = {**os.environ, "REDIS_URL": live_redis_url, "TASK_QUEUE": queue}
    app = celery_producer(live_redis_url, queue)
    try:
        done = run_python(env, "-c", script)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        [message] = Producer(TaskClient(app), live_redis_url, queue).messages()
    finally:
        app.close()
        forget_queue(live_redis_url, queue)  # declared by the script: its bindings too
    assert report["loaded"] == []
    assert report["engine"] is False
    assert (message.id, message.task, message.kwargs) == (
        report["task_id"],
        "tasks.posts.record_view",
        {"post_id": 5},
    )


def view_count(session: Session, post_id: int) -> int | None:
    return session.scalar(select(Post.view_count).where(Post.id == post_id))


def test_eager_mode_runs_the_task_inline(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    tasks.record_view(post.id)
    tasks.record_view(post.id)
    tasks.deactivate_user(post.author_id)

    assert view_count(db_session, post.id) == 2
    assert db_session.scalar(select(User.is_active).where(User.id == post.author_id)) is False


def test_same_idempotency_key_is_applied_once_eagerly(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    # Given a post; when a request is retried three times with one key, then another is made
    post = make_post()
    for _ in range(3):
        assert tasks.record_view(post.id, task_id="view:request-1") == "view:request-1"
    tasks.record_view(post.id, task_id="view:request-2")

    # Then each key counted once (a live worker: tests/live/test_exactly_once.py)

    assert view_count(db_session, post.id) == 2
    assert set(db_session.scalars(select(ProcessedTask.task_id))) == {
        "view:request-1",
        "view:request-2",
    }
