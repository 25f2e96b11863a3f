"""Fixtures of the fault suite: a throwaway PostgreSQL and Redis per test, and a figures summary."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import live_env
from tests.livecelery import LiveStack
from worker.development.databases import as_runtime_role, grant_runtime_role, migrate
from worker.development.services import MissingBinary, PostgresServer, RedisServer

FIGURES = pytest.StashKey[list[str]]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    # make test runs without -s: the figures are repeated here so a CI log and the closing note
    # can quote them.
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("fault suite figures")
        for line in sorted(lines):  # FAULT a, b, c...
            terminalreporter.write_line(line)


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record this test's one line of figures for the end-of-session summary."""
    lines = request.config.stash.setdefault(FIGURES, [])

    def record(line: str) -> None:
        lines.append(line)
        print(line)

    return record


def _missing(error: MissingBinary) -> None:
    if os.environ.get("CI"):
        pytest.fail(str(error), pytrace=False)
    pytest.skip(str(error))


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
        _missing(error)
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
        _missing(error)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def db(pg: PostgresServer) -> Iterator[Engine]:
    """An engine on the throwaway cluster for Given steps and Then checks (no pool to go stale)."""
    engine = create_engine(pg.url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def stack(pg: PostgresServer, broker: RedisServer, tmp_path: Path) -> Iterator[LiveStack]:
    """Live workers against this test's own servers; whatever is left running is killed after.

    The workers log in as the runtime role, as in production; the test's own `db` is the owner.
    """
    live = LiveStack(live_env(as_runtime_role(make_url(pg.url)), broker.url), tmp_path)
    try:
        yield live
    finally:
        for worker in live.workers:
            worker.kill()  # the outcome is checked: no need to wait for a warm shutdown
