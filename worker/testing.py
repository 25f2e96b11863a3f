"""pytest plugin `worker`: a migrated throwaway database, rolled-back sessions, eager tasks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery._state import get_current_app
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from worker import db, roles
from worker.config import get_settings

if TYPE_CHECKING:
    from celery import Celery

_PACKAGE_DIR = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside an installed wheel, or at the checkout's top level."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"no Alembic migrations found next to {_PACKAGE_DIR}")


def migrate(url: URL | str, revision: str = "head") -> None:
    """Run `alembic upgrade <revision>` against `url` (a test or throwaway database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


# Live workers in tests log in as this role (cluster-wide, so one name, created idempotently).
TEST_RUNTIME_ROLE = "worker_test_runtime"


def grant_runtime_role(admin_url: URL, database_url: URL, role: str = TEST_RUNTIME_ROLE) -> None:
    """Create `role` if missing and give it the worker's runtime privileges in `database_url`.

    Done on the template, so every database copied from it has the grants already.
    """
    admin = create_engine(admin_url, poolclass=NullPool)
    with admin.begin() as connection:
        # Test sessions running at once would otherwise race on the same pg_authid row.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:role))"), {"role": role})
        roles.ensure_role(connection, role)
    admin.dispose()
    template = create_engine(database_url, poolclass=NullPool)
    with template.begin() as connection:
        roles.grant_runtime_privileges(connection, role)
        database = connection.scalar(text("SELECT current_database()")) or ""
        roles.revoke_public_access(connection, database)
    template.dispose()


def restrict_to_runtime_role(admin_url: URL, database: str, role: str = TEST_RUNTIME_ROLE) -> None:
    """Database privileges as `create-runtime-role` leaves them: CONNECT for `role`, none for
    PUBLIC (CREATE DATABASE copies tables and their grants from the template, not these)."""
    admin = create_engine(admin_url, poolclass=NullPool)
    with admin.begin() as connection:
        roles.revoke_public_access(connection, database)
        quote = connection.dialect.identifier_preparer.quote_identifier
        connection.execute(text(f"GRANT CONNECT ON DATABASE {quote(database)} TO {quote(role)}"))
    admin.dispose()


def as_runtime_role(url: URL, role: str = TEST_RUNTIME_ROLE) -> URL:
    """`url` logging in as the test runtime role (no password: the test server trusts it)."""
    # URL.set(password=None) keeps the old password; the owner's must not go to the role.
    return url.set(username=role)._replace(password=None)


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def create_database(admin_url: URL, name: str, template: str | None = None) -> URL:
    """CREATE DATABASE `name` (optionally copying `template`) on `admin_url`'s server."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    with admin.connect() as connection:
        connection.execute(text(statement))
    return admin_url.set(database=name)


def drop_database(admin_url: URL, name: str) -> None:
    """DROP DATABASE `name`, disconnecting anyone still using it."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _unique_name(kind: str) -> str:
    return f"test_worker_{kind}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def db_template() -> Iterator[tuple[URL, str]]:
    """A migrated template database; every test database is a cheap copy of it."""
    admin_url = get_settings().sqlalchemy_url
    name = _unique_name("tmpl")
    try:
        url = create_database(admin_url, name)
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        _fail_or_skip(f"PostgreSQL is not reachable at {admin_url!r}: {reason}")
        raise
    try:
        migrate(url)
        grant_runtime_role(admin_url, url)
        yield admin_url, name
    finally:
        drop_database(admin_url, name)


@contextmanager
def database_copy(template: tuple[URL, str], kind: str) -> Iterator[URL]:
    """A new database copied from the migrated template, dropped on exit."""
    admin_url, template_name = template
    name = _unique_name(kind)
    url = create_database(admin_url, name, template=template_name)
    try:
        restrict_to_runtime_role(admin_url, name)
        yield url
    finally:
        drop_database(admin_url, name)


@pytest.fixture(scope="session")
def db_url(db_template: tuple[URL, str]) -> Iterator[URL]:
    """URL of the session's throwaway, migrated database next to the one DATABASE_URL names."""
    with database_copy(db_template, "db") as url:
        yield url


@pytest.fixture
def committed_db_url(db_template: tuple[URL, str]) -> Iterator[URL]:
    """A fresh migrated database for one test whose code commits for real (e.g. a live worker)."""
    with database_copy(db_template, "live") as url:
        yield url


@pytest.fixture(scope="session")
def db_engine(db_url: URL) -> Iterator[Engine]:
    """Engine of the throwaway database; code under test calling `get_engine()` gets it too."""
    engine = create_engine(db_url, pool_size=2, max_overflow=5)
    with db.engine_installed(engine):
        yield engine
    engine.dispose()


@pytest.fixture
def db_connection(db_engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with db_engine.connect() as connection:
        transaction = connection.begin()
        try:
            with db.sessions_joined_to(connection):
                yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def db_session(db_connection: Connection) -> Iterator[Session]:
    """A session on the test's connection; its (and every task's) commits become savepoints."""
    session = Session(
        bind=db_connection,
        join_transaction_mode="create_savepoint",
        autoflush=False,
        expire_on_commit=False,
    )
    try:
        yield session
    finally:
        session.close()


def _app() -> Celery:
    from worker.app import app

    app.loader.import_default_modules()
    return app


@pytest.fixture
def eager_tasks() -> Iterator[Celery]:
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
def fake_redis() -> Iterator[Any]:
    """A fakeredis client, empty for each test, for code that talks to Redis directly."""
    import fakeredis

    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.flushall()
        client.close()
