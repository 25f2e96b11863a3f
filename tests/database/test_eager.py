"""Tasks run inline through the pytest plugin, the way an API team's suite would use them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.posts import record_view
from tasks.users import deactivate_dormant_users, deactivate_user
from worker.contracts import InvalidTaskArguments
from worker.errors import NotFound
from worker.models import Post, TaskFailure, User


def view_count(session: Session, post_id: int) -> int | None:
    return session.scalar(select(Post.view_count).where(Post.id == post_id))


def test_record_view_is_visible_right_after_delay(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    for _ in range(5):
        record_view.delay(post.id)
    assert view_count(db_session, post.id) == 5


def test_tasks_sent_by_name_run_eagerly_too(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    eager_tasks.tasks["tasks.posts.record_view"].apply_async(args=[post.id])
    assert view_count(db_session, post.id) == 1


def test_unknown_post_fails_in_the_caller_and_is_dead_lettered(
    eager_tasks: Celery, db_session: Session
) -> None:
    with pytest.raises(NotFound, match="post 424242"):
        record_view.apply_async(args=[424242], task_id="missing-post")
    failure = db_session.get(TaskFailure, "missing-post")
    assert failure is not None
    assert (failure.task_name, failure.error_class, failure.attempts) == (
        "tasks.posts.record_view",
        "NotFound",
        1,
    )
    assert failure.args == [424242]


@pytest.mark.parametrize("bad", ["1", True, None, 1.5, -3, [1]])
def test_bad_arguments_fail_before_any_database_work(
    eager_tasks: Celery, db_session: Session, bad: object
) -> None:
    with pytest.raises(InvalidTaskArguments, match="post_id"):
        record_view.delay(bad)
    assert db_session.scalar(select(TaskFailure.error_class)) == "InvalidTaskArguments"


def test_deactivate_user_twice_changes_once(
    eager_tasks: Celery, db_session: Session, make_user: Callable[..., User]
) -> None:
    user = make_user()
    assert deactivate_user.delay(user.id).get() is True
    first = db_session.scalar(select(User.deactivated_at).where(User.id == user.id))
    assert deactivate_user.delay(user.id).get() is False
    assert db_session.scalar(select(User.deactivated_at).where(User.id == user.id)) == first


def test_deactivate_dormant_users_returns_the_count(
    eager_tasks: Celery,
    db_session: Session,
    make_user: Callable[..., User],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime, timedelta

    long_ago = datetime.now(UTC) - timedelta(days=800)
    for _ in range(7):
        make_user(last_seen_at=long_ago)
    make_user(last_seen_at=datetime.now(UTC))
    assert deactivate_dormant_users.delay(inactive_days=365).get() == 7
    assert db_session.scalar(select(User.id).where(User.is_active.is_(True))) is not None
    assert deactivate_dormant_users.delay().get() == 0


def test_eager_tasks_win_over_an_app_the_suite_made_current(
    db_session: Session, make_post: Callable[..., Post], request: pytest.FixtureRequest
) -> None:
    # Given the worker's app, and then an API suite's own producer app (Celery makes it current)
    import worker.app  # noqa: F401

    producer = Celery("api-service-producer", broker="redis://127.0.0.1:1/0")
    request.getfixturevalue("eager_tasks")
    post = make_post()

    # When a task is called through the shared task object
    record_view.delay(post.id)

    # Then it ran inline on the worker's app, not published to the producer's broker
    assert not producer.conf.task_always_eager
    assert view_count(db_session, post.id) == 1
