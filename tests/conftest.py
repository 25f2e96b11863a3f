"""Shared test helpers; the database fixtures come from the project's own pytest plugin."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from worker.models import Post, User

_ids = itertools.count(1)


@pytest.fixture
def make_user(db_session: Session) -> Callable[..., User]:
    def make(**fields: object) -> User:
        n = next(_ids)
        user = User(
            email=str(fields.pop("email", f"user{n}@example.test")),
            name=str(fields.pop("name", f"User {n}")),
            password_hash="not-a-real-hash",
            **fields,
        )
        db_session.add(user)
        db_session.flush()
        return user

    return make


@pytest.fixture
def make_post(db_session: Session, make_user: Callable[..., User]) -> Callable[..., Post]:
    def make(**fields: object) -> Post:
        n = next(_ids)
        author = fields.pop("author", None) or make_user()
        post = Post(
            title=str(fields.pop("title", f"Post {n}")),
            body="body",
            slug=str(fields.pop("slug", f"post-{n}")),
            author_id=author.id,  # type: ignore[attr-defined]
            **fields,
        )
        db_session.add(post)
        db_session.flush()
        return post

    return make
