"""Helpers for the producer-side tests: what a producer published, data written by an API, the
outbox rows."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import ColumnElement, Engine, select, text
from sqlalchemy.orm import Session

from worker.models import OutboxMessage
from worker.producer.client import TaskClient

CANARY = "canary-pw-7f3a"


@dataclass(frozen=True)
class Queued:
    """One message as it sits in Redis: what a worker would receive."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: str | None
    content_type: str


@dataclass
class Producer:
    """A TaskClient on a queue of the test's own, and what has been published to it."""

    client: TaskClient
    redis_url: str
    queue: str

    def messages(self) -> list[Queued]:
        connection = redis.Redis.from_url(self.redis_url)
        try:
            raw = connection.lrange(self.queue, 0, -1)
        finally:
            connection.close()
        found = []
        for item in reversed(raw):  # kombu LPUSHes: the oldest message is at the right
            envelope = json.loads(item)
            args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            headers = envelope["headers"]
            found.append(
                Queued(
                    headers["id"],
                    headers["task"],
                    args,
                    kwargs,
                    headers.get("eta"),
                    envelope["content-type"],
                )
            )
        return found


def scope_on(engine: Engine) -> Callable[[], AbstractContextManager[Session]]:
    """A `session_scope` equivalent on `engine`, for code that takes a scope factory."""

    @contextmanager
    def scope() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    return scope


def add_post(session: Session, slug: str | None = None) -> tuple[int, int]:
    """Insert an author and a post with plain SQL; returns (user id, post id)."""
    tag = uuid.uuid4().hex[:10]
    user_id = session.execute(
        text(
            "INSERT INTO users (email, name, password_hash) "
            "VALUES (:email, 'Author', 'x') RETURNING id"
        ),
        {"email": f"{tag}@example.test"},
    ).scalar_one()
    post_id = session.execute(
        text(
            "INSERT INTO posts (title, body, slug, author_id) "
            "VALUES ('Title', 'Body', :slug, :author) RETURNING id"
        ),
        {"slug": slug or f"post-{tag}", "author": user_id},
    ).scalar_one()
    return int(user_id), int(post_id)


def all_rows(session: Session, *where: ColumnElement[bool]) -> list[OutboxMessage]:
    """The outbox rows (those matching `where`) in id order, as the database has them now."""
    query = select(OutboxMessage).where(*where).order_by(OutboxMessage.id)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def pending_rows(session: Session) -> list[OutboxMessage]:
    """The outbox rows not published yet, in id order."""
    return all_rows(session, OutboxMessage.sent_at.is_(None))
