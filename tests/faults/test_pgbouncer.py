"""PgBouncer in transaction mode in front of a PostgreSQL of max_connections=20: two worker nodes
of 6 children count 5,000 views exactly, and the server never holds more worker connections than
PgBouncer's pool, however many clients PgBouncer has."""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.steps import (
    add_posts,
    failures,
    log_count,
    processed,
    send_views,
    total_views,
    views_by_post,
)
from worker.development.databases import TEST_RUNTIME_ROLE, as_runtime_role
from worker.development.live import PROJECT_ROOT, LiveStack, wait_until
from worker.development.plugin import unavailable
from worker.development.processes import free_port
from worker.development.servers import PostgresServer

MAX_CONNECTIONS = 20
POOL_SIZE = 8  # server connections PgBouncer may open for the workers' role and database
NODES, CHILDREN, VIEWS, POSTS = 2, 6, 5_000, 50
DOCUMENTED = PROJECT_ROOT / "docs" / "deploy" / "pgbouncer.ini"


@dataclass
class PgBouncer:
    """A pgbouncer process of this test's own, on a free port."""

    port: int
    proc: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def accepts(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


def documented_settings() -> dict[str, str]:
    """The [pgbouncer] section of docs/deploy/pgbouncer.ini."""
    parser = configparser.ConfigParser()
    parser.read_string(DOCUMENTED.read_text())
    return dict(parser["pgbouncer"])


def pgbouncer_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@pytest.fixture
def small_pg(pg: PostgresServer) -> PostgresServer:
    """The test's throwaway cluster, restarted with max_connections=20 (3 for superusers)."""
    pg.max_connections = MAX_CONNECTIONS
    pg.restart()
    return pg


@pytest.fixture
def pgbouncer(small_pg: PostgresServer, tmp_path: Path) -> Iterator[PgBouncer]:
    binary = pgbouncer_binary()
    if binary is None:
        unavailable("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
    # Next to the cluster, which user postgres can reach: pgbouncer refuses to run as root.
    home = small_pg.base_dir / "pgbouncer"
    home.mkdir()
    port = free_port()
    (home / "userlist.txt").write_text(f'"postgres" ""\n"{TEST_RUNTIME_ROLE}" ""\n')
    # The documented settings, with this test's addresses, authentication and pool size.
    settings = documented_settings()
    assert settings["pool_mode"] == "transaction"
    settings |= {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(home / "userlist.txt"),
        "default_pool_size": str(POOL_SIZE),
    }
    config = [f"[databases]\n* = host=127.0.0.1 port={small_pg.port}\n[pgbouncer]"]
    config += [f"{key} = {value}" for key, value in settings.items()]
    (home / "pgbouncer.ini").write_text("\n".join(config) + "\n")
    account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    log_file = tmp_path / "pgbouncer.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [binary, str(home / "pgbouncer.ini")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
    bouncer = PgBouncer(port, proc, log_file)
    try:
        wait_until(bouncer.accepts, timeout=30, what="pgbouncer to listen")
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class PeakConnections:
    """Samples pg_stat_activity on the server until stopped: the most connections seen."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.workers = self.total = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        query = text(
            "SELECT count(*) FILTER (WHERE usename = :role), count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend'"
        )
        with self.engine.connect() as connection:
            while not self._stop.wait(0.02):
                workers, total = connection.execute(query, {"role": TEST_RUNTIME_ROLE}).one()
                connection.rollback()  # a fresh snapshot of pg_stat_activity each time
                self.workers, self.total = max(self.workers, workers), max(self.total, total)
                self.samples += 1


def test_two_nodes_through_pgbouncer_count_5000_views_within_its_pool(
    small_pg: PostgresServer,
    pgbouncer: PgBouncer,
    stack: LiveStack,
    db: Engine,
    figure: Callable[[str], None],
) -> None:
    # Given posts, and workers that reach the server only through PgBouncer, without
    # prepared statements (a server connection serves another client after each transaction)
    posts = add_posts(db, POSTS)
    through_bouncer = as_runtime_role(make_url(small_pg.url)).set(port=pgbouncer.port)
    env = {
        "DATABASE_URL": through_bouncer.render_as_string(hide_password=False),
        "DB_PREPARED_STATEMENTS": "false",
    }

    with PeakConnections(db) as peak:
        # When two nodes of 6 children start and count 5,000 views sent by name
        started = time.monotonic()
        workers = [stack.start_worker(CHILDREN, env=env) for _ in range(NODES)]
        with stack.producer() as client:
            send_views(stack, client, posts, VIEWS, tag="bouncer")
        wait_until(
            lambda: total_views(db) >= VIEWS, timeout=240, interval=0.2, what=f"{VIEWS} views"
        )
        elapsed = time.monotonic() - started

    # Then every view counted once, none failed, and both nodes did their share
    assert views_by_post(db) == dict.fromkeys(posts, VIEWS // POSTS)
    assert processed(db) == VIEWS
    assert failures(db) == {}
    assert all(log_count(w, r"record_view\[bouncer-\d+\] succeeded") for w in workers)
    # And nobody was turned away, nothing missed a prepared statement
    logs = [w.log() for w in workers] + [pgbouncer.log(), small_pg.log_file.read_text()]
    for log in logs:
        assert "too many clients" not in log
        assert "prepared statement" not in log
    # And the server never saw more worker connections than PgBouncer's pool
    assert peak.samples > 10
    assert 0 < peak.workers <= POOL_SIZE
    assert peak.total < MAX_CONNECTIONS
    figure(
        f"pgbouncer: {VIEWS} views, {NODES} nodes x {CHILDREN} children in {elapsed:.1f}s; "
        f"peak server connections {peak.workers} of the workers (pool {POOL_SIZE}), "
        f"{peak.total} in all (max_connections {MAX_CONNECTIONS})"
    )
