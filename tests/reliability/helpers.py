"""Given and Then steps for the reliability tests: rows to work on, dead letters, counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from tests.seed import add_posts as add_posts  # re-exported for the reliability tests


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
