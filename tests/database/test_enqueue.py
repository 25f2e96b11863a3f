"""Enqueue after commit: published when the transaction commits, in order; nothing on rollback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

import pytest
from celery import Celery
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.database.producer import CANARY, Producer, add_post
from worker.contracts import DEACTIVATE_USER, InvalidTaskArguments
from worker.db import get_db, session_scope
from worker.errors import NotFound
from worker.models import Post, ProcessedTask, TaskFailure, User
from worker.producer.client import TaskClient
from worker.producer.enqueue import after_commit, enqueue_on_commit


def view_count(session: Session, post_id: int) -> int | None:
    return session.scalar(select(Post.view_count).where(Post.id == post_id))


class RequestFailed(Exception):
    pass


def failing_request(work: Callable[[Session], object]) -> None:
    """Run `work` in a session scope, then fail the way a handler would: the scope rolls back."""
    with session_scope() as session:
        work(session)
        raise RequestFailed


def failing_savepoint(session: Session, work: Callable[[Session], object]) -> None:
    with session.begin_nested():
        work(session)
        raise RequestFailed


def test_calls_are_published_after_commit_in_call_order(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session:
        user_id, post_id = add_post(session)
        ids = [
            after_commit(session, producer.client).record_view(post_id),
            enqueue_on_commit(
                session, DEACTIVATE_USER, kwargs={"user_id": user_id}, client=producer.client
            ),
            after_commit(session, producer.client).record_view(post_id, task_id="third"),
        ]
        # Before the commit nothing has left: a worker could not see the post yet.
        assert producer.messages() == []

    queued = producer.messages()
    assert [m.id for m in queued] == ids
    assert [(m.task, m.kwargs) for m in queued] == [
        ("tasks.posts.record_view", {"post_id": post_id}),
        ("tasks.users.deactivate_user", {"user_id": user_id}),
        ("tasks.posts.record_view", {"post_id": post_id}),
    ]
    assert db_session.get(Post, post_id) is not None


def test_rollback_publishes_nothing(db_session: Session, producer: Producer) -> None:
    def work(session: Session) -> None:
        _, post_id = add_post(session)
        after_commit(session, producer.client).record_view(post_id)

    with pytest.raises(RequestFailed):
        failing_request(work)

    assert producer.messages() == []
    assert db_session.scalar(select(func.count()).select_from(Post)) == 0


def test_the_next_transaction_of_the_same_session_starts_empty(
    db_session: Session, producer: Producer
) -> None:
    session = db_session
    after_commit(session, producer.client).record_view(1)
    session.rollback()
    after_commit(session, producer.client).record_view(2)
    session.commit()
    session.commit()  # a commit with nothing enqueued publishes nothing more

    assert [m.kwargs for m in producer.messages()] == [{"post_id": 2}]


def test_savepoint_rollback_drops_only_the_calls_made_inside_it(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session:
        after_commit(session, producer.client).record_view(1)
        with pytest.raises(RequestFailed):
            failing_savepoint(session, lambda s: after_commit(s, producer.client).record_view(2))
        with session.begin_nested():
            after_commit(session, producer.client).record_view(3)
        assert producer.messages() == []  # a released savepoint is not a commit

    assert [m.kwargs["post_id"] for m in producer.messages()] == [1, 3]


def test_a_bad_call_fails_at_the_call_not_at_commit(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session:
        with pytest.raises(InvalidTaskArguments, match="post_id"):
            after_commit(session, producer.client).record_view(-5)
        after_commit(session, producer.client).record_view(5)

    assert [m.kwargs for m in producer.messages()] == [{"post_id": 5}]


Db = Annotated[Session, Depends(get_db, scope="function")]


@pytest.fixture
def api(db_session: Session, producer: Producer) -> Iterator[TestClient]:
    """A FastAPI service using the package's `get_db` dependency."""
    app = FastAPI()

    @app.post("/posts/{post_id}/views", status_code=202)
    def view(post_id: int, db: Db, fail: bool = False) -> dict[str, str]:
        if db.get(Post, post_id) is None:
            raise HTTPException(404, "no such post")
        task_id = after_commit(db, producer.client).record_view(post_id)
        if fail:
            raise HTTPException(409, "conflict after enqueueing")
        return {"task_id": task_id}

    with TestClient(app) as client:
        yield client


def test_committed_request_enqueues_exactly_once(
    api: TestClient, db_session: Session, producer: Producer
) -> None:
    _, post_id = add_post(db_session)
    db_session.commit()

    response = api.post(f"/posts/{post_id}/views")

    assert response.status_code == 202
    assert [(m.id, m.kwargs) for m in producer.messages()] == [
        (response.json()["task_id"], {"post_id": post_id})
    ]


def test_rolled_back_request_enqueues_nothing(
    api: TestClient, db_session: Session, producer: Producer
) -> None:
    _, post_id = add_post(db_session)
    db_session.commit()

    assert api.post(f"/posts/{post_id}/views", params={"fail": True}).status_code == 409
    assert api.post("/posts/999999/views").status_code == 404
    assert producer.messages() == []


def test_broker_down_at_commit_keeps_the_change_and_dead_letters_the_task(
    db_session: Session, dead_broker_client: TaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="worker.producer.enqueue"),
        session_scope() as session,
    ):
        user_id, _ = add_post(session)
        task_id = after_commit(session, dead_broker_client).deactivate_user(user_id)

    # The request's own change is committed; the task is not lost silently
    assert db_session.get(User, user_id) is not None
    failure = db_session.get(TaskFailure, task_id)
    assert failure is not None
    assert (failure.task_name, failure.error_class, failure.kwargs) == (
        "tasks.users.deactivate_user",
        "PublishError",
        {"user_id": user_id},
    )
    assert "Connection refused" in failure.error_message
    assert task_id in caplog.text
    assert CANARY not in failure.error_message
    assert CANARY not in caplog.text


def test_eager_mode_runs_the_task_after_the_commit(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    with session_scope() as session:
        after_commit(session).record_view(post.id)
        after_commit(session).record_view(post.id)
        assert view_count(db_session, post.id) == 0
    assert view_count(db_session, post.id) == 2

    with pytest.raises(RequestFailed):
        failing_request(lambda session: after_commit(session).record_view(post.id))
    assert view_count(db_session, post.id) == 2
    assert db_session.scalar(select(func.count()).select_from(ProcessedTask)) == 2


def test_eager_task_errors_surface_at_commit_and_the_change_stays(
    eager_tasks: Celery, db_session: Session
) -> None:
    created: list[int] = []

    def request() -> None:
        with session_scope() as session:
            created.append(add_post(session)[0])
            after_commit(session).record_view(999_999)

    with pytest.raises(NotFound, match="post 999999"):
        request()
    assert db_session.get(User, created[0]) is not None
