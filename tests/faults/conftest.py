"""Fixtures of the fault tests: a throwaway PostgreSQL and Redis per test, which it may break."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from worker.development.binaries import MissingBinary
from worker.development.databases import (
    as_runtime_role,
    grant_runtime_role,
    migrate,
    unpooled,
)
from worker.development.live import LiveStack, stack_env
from worker.development.plugin import unavailable
from worker.development.servers import PostgresServer, RedisServer


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresServer]:
    """A throwaway, migrated PostgreSQL cluster on a free port; this test may break it."""
    # Not under tmp_path: as root the cluster runs as user postgres, and every new pytest
    # session (a CI step, a colleague's run) chmods pytest-of-<user> back to 0700, which
    # would lock pg_ctl out of a running cluster before the test restarts or stops it.
    base = Path(tempfile.mkdtemp(prefix="faults-pg-"))
    server = PostgresServer(base)
    try:
        server.start()
    except MissingBinary as error:
        shutil.rmtree(base, ignore_errors=True)
        unavailable(str(error))
    try:
        migrate(server.url)
        grant_runtime_role(make_url(server.url), make_url(server.url))
        yield server
    finally:
        try:
            server.stop(mode="immediate")
        finally:
            with contextlib.suppress(OSError):  # the log stays with the test's other files
                shutil.copy(server.log_file, tmp_path / "postgres.log")
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port (indirect parameter: its password)."""
    server = RedisServer(tmp_path / "redis", password=getattr(request, "param", None))
    try:
        server.start()
    except MissingBinary as error:
        unavailable(str(error))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def db(pg: PostgresServer) -> Iterator[Engine]:
    """An engine on the throwaway cluster for Given steps and Then checks (no pool to go stale)."""
    with unpooled(pg.url) as engine:
        yield engine


@pytest.fixture
def stack(pg: PostgresServer, broker: RedisServer, tmp_path: Path) -> Iterator[LiveStack]:
    """Live workers against this test's own servers; whatever is left running is killed after.

    The workers log in as the runtime role, as in production; the test's own `db` is the owner.
    """
    live = LiveStack(stack_env(as_runtime_role(make_url(pg.url)), broker.url), tmp_path)
    try:
        yield live
    finally:
        live.kill()
