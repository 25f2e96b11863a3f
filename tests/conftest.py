"""Shared test helpers; the database fixtures come from the project's own pytest plugin."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kombu.transport import virtual as kombu_virtual
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.livecelery import LiveStack
from worker import db
from worker.config import Settings, get_settings
from worker.development.databases import as_runtime_role
from worker.development.services import mask_url
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


TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def live_env(database_url: URL, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a worker process: its own database, Redis, queue and app name."""
    tag = uuid.uuid4().hex[:8]
    _queues_of_this_test.add(f"test-{tag}")
    return {
        **os.environ,
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "TASK_QUEUE": f"test-{tag}",
        "APP_NAME": f"t{tag}",
        **extra,
    }


# The queues the running test made on the test Redis database, whoever declared them.
_queues_of_this_test: set[str] = set()
_KOMBU_TABLES = ("_kombu.binding.", "_kombu.binding_permanent.")
_KOMBU_SEP = "\x06\x16"


def _forget_queues(client: redis.Redis, queues: set[str]) -> None:
    """Delete the queues and their members of kombu's binding tables (each table a Redis set).

    Only members naming these queues go, so a test running alongside on the same database keeps
    its bindings; a table left empty is gone with its last member.
    """
    for key in client.scan_iter(match="_kombu.binding*", count=1000):
        name = key.decode(errors="replace")
        if not name.startswith(_KOMBU_TABLES):
            continue
        members = client.smembers(key)
        ours = [m for m in members if m.decode(errors="replace").split(_KOMBU_SEP)[-1] in queues]
        if ours:
            client.srem(key, *ours)
    for queue in queues:
        client.delete(queue, *(f"{queue}{_KOMBU_SEP}{step}" for step in (3, 6, 9)))


@pytest.fixture
def live_redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The configured Redis server, on the test database index (TEST_REDIS_DB, default 15).

    Tests share it safely because each uses a queue of its own (see `live_env`); at the end
    the queues the test declared, and kombu's `_kombu.binding*` entries for them, are removed.
    """
    url = redis_url_with_db(get_settings().redis_url.get_secret_value(), TEST_REDIS_DB)
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as error:
        client.close()
        message = f"Redis is not reachable at {mask_url(url)}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    _queues_of_this_test.clear()
    declare = kombu_virtual.Channel.queue_bind

    def queue_bind(channel: kombu_virtual.Channel, queue: str, *args: Any, **kwargs: Any) -> Any:
        _queues_of_this_test.add(queue)  # producers in this process; workers use live_env's
        return declare(channel, queue, *args, **kwargs)

    monkeypatch.setattr(kombu_virtual.Channel, "queue_bind", queue_bind)
    try:
        yield url
    finally:
        _forget_queues(client, _queues_of_this_test)
        _queues_of_this_test.clear()
        client.close()


@pytest.fixture
def live_stack(committed_db_url: URL, live_redis_url: str, tmp_path: Path) -> Iterator[LiveStack]:
    """Start real workers against a fresh database and a Redis database of the test's own.

    The workers log in as the runtime role (only the privileges the tasks need); `live_db`
    and test setup use the owner.
    """
    stack = LiveStack(live_env(as_runtime_role(committed_db_url), live_redis_url), tmp_path)
    try:
        yield stack
    finally:
        stack.shutdown()


@pytest.fixture
def live_db(committed_db_url: URL) -> Iterator[Engine]:
    """An engine on the live test database, for Given steps and Then assertions."""
    engine = create_engine(committed_db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def worker_engine(committed_db_url: URL) -> Iterator[Engine]:
    """The worker's engine, as a pool child builds it, with one pooled connection."""
    settings = Settings(
        database_url=SecretStr(committed_db_url.render_as_string(hide_password=False)),
        db_pool_size=1,
        db_max_overflow=0,
    )
    engine = db.build_engine(settings, os.getpid())
    with db.engine_installed(engine):
        yield engine
    engine.dispose()
