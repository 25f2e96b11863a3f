"""Given and Then steps for the reliability tests: rows to work on, dead letters, counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text


def add_posts(engine: Engine, count: int) -> list[int]:
    """`count` posts by one new author; their ids."""
    with engine.begin() as connection:
        author = connection.scalar(
            text(
                "INSERT INTO users (email, name, password_hash) "
                "VALUES ('author-' || gen_random_uuid() || '@example.test', 'A', 'x') RETURNING id"
            )
        )
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


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.scalar(text(sql), params)


def views(engine: Engine, post_id: int) -> int:
    return int(scalar(engine, "SELECT view_count FROM posts WHERE id = :id", id=post_id))


def failure(engine: Engine, task_id: str) -> dict[str, Any] | None:
    """The dead letter of `task_id` as a dict, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM task_failures WHERE task_id = :id"), {"id": task_id}
        ).one_or_none()
    return dict(row._mapping) if row is not None else None


def failure_count(engine: Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM task_failures"))


def processed_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.scalars(
                text(
                    "SELECT task_id FROM processed_tasks "
                    "WHERE task_name <> 'tasks.maintenance.record_refusal'"
                )
            )
        )
