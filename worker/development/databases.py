"""Throwaway test databases: migrated templates, cheap copies, the runtime role's grants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from worker.operations import roles

# The worker package: an installed wheel carries the migrations inside it as _migrations.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


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


@contextmanager
def disposing(engine: Engine) -> Iterator[Engine]:
    """`engine`, its connections closed at the end of the block."""
    try:
        yield engine
    finally:
        engine.dispose()


def unpooled(url: URL | str) -> AbstractContextManager[Engine]:
    """An engine without a pool (nothing to go stale when a server restarts), disposed after."""
    return disposing(create_engine(url, poolclass=NullPool))


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


def unique_name(kind: str) -> str:
    return f"test_worker_{kind}_{uuid.uuid4().hex[:10]}"


@contextmanager
def database_copy(template: tuple[URL, str], kind: str) -> Iterator[URL]:
    """A new database copied from the migrated template, dropped on exit."""
    admin_url, template_name = template
    name = unique_name(kind)
    url = create_database(admin_url, name, template=template_name)
    try:
        restrict_to_runtime_role(admin_url, name)
        yield url
    finally:
        drop_database(admin_url, name)
