"""Given rows and Then figures on a committed database, shared by tests and benchmarks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    """The first column of the first row of `sql`, on a connection of its own."""
    with engine.connect() as connection:
        return connection.scalar(text(sql), params)


def add_users(engine: Engine, count: int) -> list[int]:
    """`count` new active users with unique emails; their ids."""
    with engine.begin() as connection:
        return list(
            connection.execute(
                text(
                    "INSERT INTO users (email, name, password_hash) "
                    "SELECT 'u-' || gen_random_uuid() || '@example.test', 'U' || g, 'x' "
                    "FROM generate_series(1, :n) g RETURNING id"
                ),
                {"n": count},
            ).scalars()
        )


def add_posts(engine: Engine, count: int) -> list[int]:
    """`count` posts by one new author, with unique slugs; their ids."""
    author = add_users(engine, 1)[0]
    with engine.begin() as connection:
        return list(
            connection.execute(
                text(
                    "INSERT INTO posts (title, body, slug, author_id) "
                    "SELECT 'P' || g, 'b', 'slug-' || gen_random_uuid(), :author "
                    "FROM generate_series(1, :n) g RETURNING id"
                ),
                {"n": count, "author": author},
            ).scalars()
        )


def total_views(engine: Engine) -> int:
    """Views over all posts."""
    return int(scalar(engine, "SELECT coalesce(sum(view_count), 0) FROM posts"))
