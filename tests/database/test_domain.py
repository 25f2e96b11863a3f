"""Domain functions called directly with a session: the SQL the tasks run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.domain import posts, users
from worker.errors import NotFound
from worker.models import Post, User


def test_record_view_counts_atomically(db_session: Session, make_post: Callable[..., Post]) -> None:
    post = make_post()
    other = make_post()
    for _ in range(3):
        posts.record_view(db_session, post.id)
    assert posts.record_view(db_session, post.id) == 4
    counts = dict(db_session.execute(select(Post.id, Post.view_count)).all())
    assert counts == {post.id: 4, other.id: 0}


def test_record_view_of_unknown_post_is_not_found(db_session: Session) -> None:
    with pytest.raises(NotFound, match="post 999 does not exist"):
        posts.record_view(db_session, 999)


def test_server_defaults_fill_rows_inserted_with_plain_sql(db_session: Session) -> None:
    db_session.execute(
        User.__table__.insert().values(email="raw@example.test", name="Raw", password_hash="x")
    )
    row = db_session.execute(select(User).where(User.email == "raw@example.test")).scalar_one()
    assert (row.role, row.is_active, row.deactivated_at) == ("user", True, None)
    assert row.created_at.tzinfo is not None
    assert "password" not in repr(row)
    assert "x'" not in repr(row)


def test_deactivate_user_is_idempotent(db_session: Session, make_user: Callable[..., User]) -> None:
    user = make_user()
    assert users.deactivate_user(db_session, user.id) is True
    first = db_session.scalar(select(User.deactivated_at).where(User.id == user.id))
    assert first is not None
    assert users.deactivate_user(db_session, user.id) is False
    row = db_session.execute(select(User.is_active, User.deactivated_at).where(User.id == user.id))
    assert row.one() == (False, first)


def test_deactivate_unknown_user_is_not_found(db_session: Session) -> None:
    with pytest.raises(NotFound, match="user 12345"):
        users.deactivate_user(db_session, 12345)


def test_dormant_batches_take_only_dormant_active_users(
    db_session: Session, make_user: Callable[..., User]
) -> None:
    now = db_session.scalar(select(func.now()))
    assert now is not None
    old, recent = now - timedelta(days=400), now - timedelta(days=10)
    dormant = [make_user(last_seen_at=old) for _ in range(5)]
    never_seen_old = make_user()
    db_session.execute(
        update(User).where(User.id == never_seen_old.id).values(created_at=old, last_seen_at=None)
    )
    active = [make_user(last_seen_at=recent) for _ in range(3)]
    already_inactive = make_user(last_seen_at=old, is_active=False)

    cutoff = users.dormant_cutoff(db_session, 365)
    assert users.count_dormant(db_session, cutoff) == 6
    changed, after = 0, 0
    while (batch := users.deactivate_dormant_batch(db_session, cutoff, after, 2)).last_id:
        assert batch.changed <= 2
        changed += batch.changed
        after = batch.last_id
    assert changed == 6

    inactive = set(db_session.scalars(select(User.id).where(User.is_active.is_(False))))
    assert inactive == {u.id for u in dormant} | {never_seen_old.id, already_inactive.id}
    assert not inactive & {u.id for u in active}


def test_record_view_once_counts_each_task_id_once(
    db_session: Session, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    assert posts.record_view_once(db_session, post.id, "t-1", "tasks.posts.record_view") == 1
    assert posts.record_view_once(db_session, post.id, "t-1", "tasks.posts.record_view") is None
    assert posts.record_view_once(db_session, post.id, "t-2", "tasks.posts.record_view") == 2
    with pytest.raises(NotFound, match="post 424242"):
        posts.record_view_once(db_session, 424242, "t-3", "tasks.posts.record_view")
