"""Tests for worker.development.services against real throwaway PostgreSQL and Redis servers."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.development.services import (
    PostgresServer,
    RedisServer,
    ServerError,
    free_port,
    mask_url,
    postgres_reachable,
    redis_reachable,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def select_one(port: int) -> int:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute("SELECT 1")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_server_starts_restarts_and_survives_a_kill(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "pg") as pg:
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


def test_postgres_failed_start_reports_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        pg = PostgresServer(tmp_path / "pg", port=busy.getsockname()[1])
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


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg2://app:hunter2@db.internal:5432/app",
            "postgresql+psycopg2://app:***@db.internal:5432/app",
        ),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://default:p%40ss@cache:6379/1", "redis://default:***@cache:6379/1"),
        (
            "postgresql://db/app?sslmode=require&password=x",
            "postgresql://db/app?sslmode=require&password=***",
        ),
        ("postgresql://postgres@127.0.0.1/postgres", "postgresql://postgres@127.0.0.1/postgres"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_ensure_cli_starts_reuses_and_stops_local_servers(tmp_path: Path) -> None:
    closed = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+psycopg2://postgres:hunter2@127.0.0.1:{closed}/postgres",
        "REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/0",
    }
    local, env_file = tmp_path / "local", tmp_path / "dev.env"

    def cli(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.development.services", *args, "--dir", str(local)],
            cwd=PROJECT_ROOT,
            env={**env, **overrides},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    exports: dict[str, str] = {}
    try:
        first = cli("ensure", "--env-file", str(env_file))
        assert first.returncode == 0, first.stderr
        assert "hunter2" not in first.stderr
        assert first.stderr.count("was not reachable; started a project-local server") == 2
        for line in first.stdout.splitlines():
            keyword, assignment = shlex.split(line)
            assert keyword == "export"
            name, _, value = assignment.partition("=")
            exports[name] = value
        assert set(exports) == {"DATABASE_URL", "REDIS_URL"}
        assert postgres_reachable(exports["DATABASE_URL"])
        assert redis_reachable(exports["REDIS_URL"])
        assert select_one(int(exports["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0])) == 1
        expected = f"DATABASE_URL={exports['DATABASE_URL']}\nREDIS_URL={exports['REDIS_URL']}\n"
        assert env_file.read_text() == expected

        # Second run: the local PostgreSQL is reused; the local Redis is now simply reachable.
        second = cli("ensure", REDIS_URL=exports["REDIS_URL"])
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout
        assert "using the already running project-local server" in second.stderr
        assert f"redis: using {exports['REDIS_URL']}" in second.stderr
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not postgres_reachable(exports["DATABASE_URL"])
    assert not redis_reachable(exports["REDIS_URL"])
