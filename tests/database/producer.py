"""Helpers for the producer-side tests: what a producer published, data written by an API."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

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
