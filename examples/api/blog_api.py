"""Example API service on the platform worker: users and posts, views counted by a task.

Each request's X-Request-ID (or a new one) is the correlation id of the tasks it enqueues: the
worker's log lines for those tasks, and their dead letters, carry it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.client import correlation_id, valid_correlation_id
from worker.db import get_db
from worker.enqueue import after_commit
from worker.models import Post, User
from worker.outbox import in_outbox


class RequestId:
    """ASGI middleware: the request's X-Request-ID, or a new one if it has none or one that is
    no correlation id, becomes the correlation id of the tasks it enqueues, and is sent back."""

    header = "X-Request-ID"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(self.header)
        request_id = given if valid_correlation_id(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[self.header] = request_id
            await send(message)

        # A context variable: the endpoint's thread and the commit that publishes see it too.
        with correlation_id(request_id):
            await self.app(scope, receive, send_with_id)


app = FastAPI(title="blog example")
app.add_middleware(RequestId)

# scope="function": the session commits (and after-commit tasks are published) before the
# response is sent, so a failed commit is a failed request, never a 200 for lost data.
Db = Annotated[Session, Depends(get_db, scope="function")]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=8, max_length=200)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    is_active: bool


class PostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author_id: Id
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(max_length=100_000)
    slug: str = Field(max_length=200, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    public_id: uuid.UUID
    slug: str
    title: str
    body: str
    status: str
    view_count: int
    author_id: int


class Accepted(BaseModel):
    task_id: str


def hash_password(password: str) -> str:
    """scrypt with a random salt; the plain password is never stored."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def insert_or_conflict(db: Session, row: User | Post, what: str) -> None:
    """Flush now so a unique violation is a 409 here, not an error at commit."""
    db.add(row)
    try:
        db.flush()
    except IntegrityError:
        # get_db rolls the whole request back when the exception leaves the handler.
        raise HTTPException(status.HTTP_409_CONFLICT, f"{what} already exists") from None


@app.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(payload: UserIn, db: Db) -> UserOut:
    """Register a user."""
    user = User(
        email=payload.email.lower(),
        name=payload.name,
        password_hash=hash_password(payload.password),
    )
    insert_or_conflict(db, user, "a user with this email")
    db.refresh(user)
    return UserOut.model_validate(user)


@app.post("/posts", status_code=status.HTTP_201_CREATED)
def create_post(payload: PostIn, db: Db) -> PostOut:
    """Publish a post for an existing author."""
    if db.get(User, payload.author_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {payload.author_id} not found")
    post = Post(
        author_id=payload.author_id,
        title=payload.title,
        body=payload.body,
        slug=payload.slug,
        status="published",
    )
    insert_or_conflict(db, post, "a post with this slug")
    db.refresh(post)
    return PostOut.model_validate(post)


@app.get("/posts/{slug}")
def read_post(slug: Annotated[str, Path(max_length=200)], db: Db) -> PostOut:
    """Return a post and count the view (a task published once this request commits)."""
    post = db.scalar(select(Post).where(Post.slug == slug))
    if post is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"post {slug!r} not found")
    after_commit(db).record_view(post.id)
    return PostOut.model_validate(post)


@app.post("/users/{user_id}/deactivate", status_code=status.HTTP_202_ACCEPTED)
def deactivate_user(
    user_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    db: Db,
    idempotency_key: Annotated[
        str | None, Header(max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    ] = None,
) -> Accepted:
    """Deactivate a user; the task goes through the outbox, so it survives a Redis outage.

    With an `Idempotency-Key` header, a retried request enqueues the task once.
    """
    if db.get(User, user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} not found")
    if idempotency_key is None:
        return Accepted(task_id=in_outbox(db).deactivate_user(user_id))
    key = f"deactivate-user:{user_id}:{idempotency_key}"
    return Accepted(task_id=in_outbox(db).deactivate_user(user_id, task_id=key))
