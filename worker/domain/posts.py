"""Post view counting: plain functions that take a session and never commit.

A view is not an edit: every path that counts views leaves `posts.updated_at` alone, so feeds,
caches and "edited" labels that read it are not disturbed by readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.errors import NotFound
from worker.prepared import PreparedStatement

_RECORD_VIEW = text(
    "UPDATE posts SET view_count = view_count + 1 WHERE id = :post_id RETURNING view_count"
)


def record_view(session: Session, post_id: int) -> int:
    """Add one view to a post with a single atomic UPDATE; return the new count."""
    # Plain SQL, not update(Post): the ORM's onupdate would set updated_at, and a view is not
    # an edit (nor may the runtime role write that column).
    new_count = session.execute(_RECORD_VIEW, {"post_id": post_id}).scalar_one_or_none()
    if new_count is None:
        raise NotFound("post", post_id)
    return int(new_count)


_CLAIM_AND_RECORD_VIEW = PreparedStatement(
    "worker_record_view_once",
    """
    WITH claimed AS (
        INSERT INTO processed_tasks (task_id, task_name) VALUES (:task_id, :task_name)
        ON CONFLICT (task_id) DO NOTHING
        RETURNING 1
    ), counted AS (
        UPDATE posts SET view_count = view_count + 1
        WHERE id = :post_id AND EXISTS (SELECT FROM claimed)
        RETURNING view_count
    )
    SELECT EXISTS (SELECT FROM claimed) AS claimed, (SELECT view_count FROM counted) AS new_count
    """,
    {"task_id": "text", "task_name": "text", "post_id": "bigint"},
)


def record_view_once(session: Session, post_id: int, task_id: str, task_name: str) -> int | None:
    """`record_view` and the exactly-once ledger claim in one prepared statement.

    Returns None when `task_id` was already applied; raises NotFound (so the caller's rollback
    also undoes the claim) when the post does not exist.
    """
    row = _CLAIM_AND_RECORD_VIEW.execute(
        session, {"task_id": task_id, "task_name": task_name, "post_id": post_id}
    ).one()
    if not row.claimed:
        return None
    if row.new_count is None:
        raise NotFound("post", post_id)
    return int(row.new_count)


@dataclass(frozen=True)
class AddedViews:
    """What one set-based apply did: views added to posts, views dropped for missing posts."""

    posts: int
    views: int
    missing_posts: int
    dropped_views: int


@lru_cache(maxsize=8)
def _add_views_sql(rows: int) -> str:
    # Only placeholders are formatted in: psycopg2 binds every value. Casts on the first row
    # type the whole VALUES list.
    values = ", ".join(["(%s::bigint, %s::integer)"] + ["(%s, %s)"] * (rows - 1))
    head = "UPDATE posts SET view_count = posts.view_count + v.n FROM "
    return head + f"(VALUES {values}) AS v(id, n) WHERE posts.id = v.id RETURNING posts.id"


def add_view_counts(session: Session, counts: Mapping[int, int], chunk_size: int) -> AddedViews:
    """Add `{post_id: views}` to the posts with one UPDATE ... FROM (VALUES ...) per chunk.

    Chunks go in ascending post id order, so two transactions doing this lock rows in the same
    order and cannot deadlock each other. Views of posts that no longer exist are dropped and
    reported. Runs in the caller's transaction.
    """
    items = sorted(counts.items())
    connection = session.connection()
    posts = views = missing = dropped = 0
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        sql = _add_views_sql(len(chunk))
        found = set(connection.exec_driver_sql(sql, tuple(chain.from_iterable(chunk))).scalars())
        for post_id, n in chunk:
            if post_id in found:
                posts, views = posts + 1, views + n
            else:
                missing, dropped = missing + 1, dropped + n
    return AddedViews(posts=posts, views=views, missing_posts=missing, dropped_views=dropped)
