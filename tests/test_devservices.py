"""Tests for worker.development.services against real throwaway PostgreSQL and Redis servers."""

from __future__ import annotations

import contextlib
import socket
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
    mask_url,
    postgres_reachable,
    redis_reachable,
)


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
