"""pytest plugin `worker`: a migrated throwaway database, rolled-back sessions, eager tasks.

Every fixture has a `worker_` name (`worker_db_session`, `worker_eager_tasks`, ...), and the
plugin's fixtures depend only on those. The short names (`db_session`, `eager_tasks`, ...) are
aliases. A suite's own fixture of a short name (its `db_session` in its conftest, say) replaces
that alias for the suite's tests and nothing else: the plugin keeps its own chain, and the suite
asks for the worker's by the `worker_` name. Override a `worker_` fixture only to change what the
plugin itself uses.

The worker's tasks are the top-level package `tasks`; a suite with a `tasks` module of its own
keeps it (`worker.development.task_modules`).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import pytest
from celery._state import get_current_app
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from worker import db
from worker.config import get_settings
from worker.development.databases import (
    create_database,
    database_copy,
    disposing,
    drop_database,
    grant_runtime_role,
    migrate,
    unique_name,
)
from worker.development.task_modules import import_worker_task_modules

if TYPE_CHECKING:
    from celery import Celery


__all__ = [
    "committed_db_url",
    "db_connection",
    "db_engine",
    "db_session",
    "db_template",
    "db_url",
    "eager_tasks",
    "fake_redis",
    "json_logs",
    "unavailable",
    "worker_committed_db_url",
    "worker_db_connection",
    "worker_db_engine",
    "worker_db_session",
    "worker_db_template",
    "worker_db_url",
    "worker_eager_tasks",
    "worker_fake_redis",
    "worker_json_logs",
]


def unavailable(message: str) -> NoReturn:
    """A service or binary a test needs is missing: skip locally, fail when CI is set."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def worker_db_template() -> Iterator[tuple[URL, str]]:
    """A migrated template database; every test database is a cheap copy of it."""
    admin_url = get_settings().sqlalchemy_url
    name = unique_name("tmpl")
    try:
        url = create_database(admin_url, name)
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        unavailable(f"PostgreSQL is not reachable at {admin_url!r}: {reason}")
    try:
        migrate(url)
        grant_runtime_role(admin_url, url)
        yield admin_url, name
    finally:
        drop_database(admin_url, name)


@pytest.fixture(scope="session")
def worker_db_url(worker_db_template: tuple[URL, str]) -> Iterator[URL]:
    """URL of the session's throwaway, migrated database next to the one DATABASE_URL names."""
    with database_copy(worker_db_template, "db") as url:
        yield url


@pytest.fixture
def worker_committed_db_url(worker_db_template: tuple[URL, str]) -> Iterator[URL]:
    """A fresh migrated database for one test whose code commits for real (e.g. a live worker)."""
    with database_copy(worker_db_template, "live") as url:
        yield url


@pytest.fixture(scope="session")
def worker_db_engine(worker_db_url: URL) -> Iterator[Engine]:
    """Engine of the throwaway database; code under test calling `get_engine()` gets it too."""
    engine = create_engine(worker_db_url, pool_size=2, max_overflow=5)
    with disposing(engine), db.engine_installed(engine):
        yield engine


@pytest.fixture
def worker_db_connection(worker_db_engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with worker_db_engine.connect() as connection:
        transaction = connection.begin()
        try:
            with db.sessions_joined_to(connection):
                yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def worker_db_session(worker_db_connection: Connection) -> Iterator[Session]:
    """A session on the test's connection; its (and every task's) commits become savepoints."""
    session = Session(
        bind=worker_db_connection,
        join_transaction_mode="create_savepoint",
        autoflush=False,
        expire_on_commit=False,
    )
    try:
        yield session
    finally:
        session.close()


def _app() -> Celery:
    from worker.runtime.app import app

    # A suite's own `tasks` module may hide the worker's package: see task_modules.
    import_worker_task_modules(app.conf.include)
    app.loader.import_default_modules()
    return app


@pytest.fixture
def worker_eager_tasks() -> Iterator[Celery]:
    """Run tasks inline in the test (exceptions propagate); the app's settings come back after."""
    app = _app()
    keys = ("task_always_eager", "task_eager_propagates", "task_store_eager_result")
    saved: dict[str, Any] = {key: app.conf.get(key) for key in keys}
    app.conf.update(
        task_always_eager=True, task_eager_propagates=True, task_store_eager_result=False
    )
    # Shared tasks resolve through the current app: another Celery app created by the suite
    # (a producer client, say) must not capture `task.delay()` during this test.
    previous = get_current_app()
    app.set_current()
    try:
        yield app
    finally:
        app.conf.update(saved)
        previous.set_current()


@pytest.fixture
def worker_fake_redis() -> Iterator[Any]:
    """A fakeredis client, empty for each test, for code that talks to Redis directly."""
    if importlib.util.find_spec("fakeredis") is None:
        pytest.fail(
            "the fake_redis fixture needs fakeredis: pip install 'platform-worker[testing]'",
            pytrace=False,
        )
    import fakeredis

    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.flushall()
        client.close()


@pytest.fixture
def worker_json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The log lines written while the test runs, in the worker's LOG_FORMAT=json form, parsed:
    call it for the lines so far (tasks run inline under `eager_tasks` log in this process)."""
    from worker.runtime.json_logs import JsonLines

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# The short names: aliases a suite may replace with fixtures of its own. Each asks for its
# `worker_` fixture by name, so a suite's override of that one is what the alias returns.


def _alias(target: str, scope: Literal["session", "function"] = "function") -> Any:
    @pytest.fixture(scope=scope, name=target.removeprefix("worker_"))
    def alias(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(target)

    alias.__doc__ = f"Alias of `{target}`."
    return alias


db_template = _alias("worker_db_template", "session")
db_url = _alias("worker_db_url", "session")
committed_db_url = _alias("worker_committed_db_url")
db_engine = _alias("worker_db_engine", "session")
db_connection = _alias("worker_db_connection")
db_session = _alias("worker_db_session")
eager_tasks = _alias("worker_eager_tasks")
fake_redis = _alias("worker_fake_redis")
json_logs = _alias("worker_json_logs")
