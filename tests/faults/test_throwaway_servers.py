"""The throwaway PostgreSQL and Redis servers of `make services` and the fault tests, broken."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.development.reachability import postgres_reachable, redis_reachable
from worker.development.servers import PostgresServer, RedisServer, ServerError


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A directory for a cluster, outside pytest's (see the `pg` fixture in conftest.py)."""
    base = Path(tempfile.mkdtemp(prefix="servers-pg-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def select_one(port: int) -> int:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SELECT 1")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_server_starts_restarts_and_survives_a_kill(pg_dir: Path) -> None:
    with PostgresServer(pg_dir) as pg:
        assert pg.url == f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/postgres"
        assert select_one(pg.port) == 1
        pg.restart()
        assert select_one(pg.port) == 1
        pg.kill()
        assert not pg.is_running()
        assert not postgres_reachable(pg.url)
        pg.start()  # crash recovery, same port, same data directory
        assert select_one(pg.port) == 1
    assert not pg.is_running()


def test_postgres_failed_start_reports_the_log_tail(pg_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        pg = PostgresServer(pg_dir, port=busy.getsockname()[1])
        with pytest.raises(ServerError, match=r"tail of .*postgres\.log(.|\n)*already in use"):
            pg.start()
    assert not pg.is_running()


def test_redis_server_requires_its_password_and_restarts(tmp_path: Path) -> None:
    password = "s3cret:/@ pw"
    with RedisServer(tmp_path / "redis", password=password) as server:
        assert server.url == f"redis://:s3cret%3A%2F%40%20pw@127.0.0.1:{server.port}/0"
        cmdline = Path(f"/proc/{(tmp_path / 'redis' / 'redis.pid').read_text().strip()}/cmdline")
        assert not cmdline.exists() or password not in cmdline.read_text()  # not in `ps`
        assert not redis_reachable(f"redis://127.0.0.1:{server.port}/0")
        assert redis_reachable(server.url)
        anonymous = redis.Redis(port=server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()

        port = server.port
        server.restart()
        assert server.port == port
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        assert client.ping()
        client.close()

        server.kill()
        assert not server.is_running()
        assert not redis_reachable(server.url)
