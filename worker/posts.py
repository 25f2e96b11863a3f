"""Post view counting: plain functions that take a session and never commit."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from worker.errors import NotFound
from worker.models import Post


def record_view(session: Session, post_id: int) -> int:
    """Add one view to a post with a single atomic UPDATE; return the new count."""
    new_count = session.execute(
        update(Post)
        .where(Post.id == post_id)
        .values(view_count=Post.view_count + 1)
        .returning(Post.view_count)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if new_count is None:
        raise NotFound("post", post_id)
    return new_count
