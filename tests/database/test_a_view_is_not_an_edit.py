"""A view is not an edit: every path that counts views leaves posts.updated_at alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.contracts import RECORD_VIEW
from worker.domain import posts
from worker.models import Post, User

EDITED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

PATHS: dict[str, Callable[[Session, int], object]] = {
    "the ORM-free record_view": lambda session, post: posts.record_view(session, post),
    "the per-task statement": lambda session, post: posts.record_view_once(
        session, post, "view-task-1", RECORD_VIEW
    ),
    "the buffered flush": lambda session, post: posts.add_view_counts(session, {post: 1}, 100),
}


@pytest.mark.parametrize("count_a_view", PATHS.values(), ids=PATHS.keys())
def test_counting_a_view_keeps_the_posts_last_edit_time(
    db_session: Session, count_a_view: Callable[[Session, int], object]
) -> None:
    # Given a post last edited at a known time
    author = User(email="author@example.test", name="A", password_hash="x")
    db_session.add(author)
    db_session.flush()
    post = Post(title="T", body="b", slug="a-view", author_id=author.id, updated_at=EDITED)
    db_session.add(post)
    db_session.flush()

    # When a view is counted
    count_a_view(db_session, post.id)

    # Then the count went up and the last edit time did not move
    row = db_session.execute(
        text("SELECT view_count, updated_at FROM posts WHERE id = :id"), {"id": post.id}
    ).one()
    assert (row.view_count, row.updated_at) == (1, EDITED)


def test_the_runtime_role_may_not_write_the_last_edit_time(db_session: Session) -> None:
    from worker.development.databases import TEST_RUNTIME_ROLE

    def may_update(column: str) -> bool:
        return bool(
            db_session.scalar(
                text("SELECT has_column_privilege(:role, 'posts', :column, 'UPDATE')"),
                {"role": TEST_RUNTIME_ROLE, "column": column},
            )
        )

    assert may_update("view_count")
    assert not may_update("updated_at")
