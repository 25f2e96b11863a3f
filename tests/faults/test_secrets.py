"""Fault k: a canary password in both URLs never shows in logs, dead letters or inspect conf."""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.faults.scenario import RECORD_VIEW, add_posts, failures, processed
from tests.livecelery import ROOT, LiveStack, wait_until
from worker.development.databases import TEST_RUNTIME_ROLE, as_runtime_role
from worker.development.services import PostgresServer, RedisServer

pytestmark = pytest.mark.faults

CANARY = f"canary-{secrets.token_hex(8)}"  # URL-safe, so it reads the same quoted or not


def require_password(pg: PostgresServer, engine: Engine) -> None:
    """Give the runtime role the canary password and make its TCP logins use scram-sha-256.

    The owner (postgres) keeps trust, so the test's own checks need no password.
    """
    with engine.connect() as connection:
        connection.execute(text(f"ALTER ROLE {TEST_RUNTIME_ROLE} PASSWORD '{CANARY}'"))
        connection.commit()
    hba = pg.data_dir / "pg_hba.conf"
    lines = [
        re.sub(r"trust\s*$", "scram-sha-256", line) if line.startswith("host") else line
        for line in hba.read_text().splitlines()
    ]
    owner = "host all postgres 127.0.0.1/32 trust"  # first match wins: before the others
    hba.write_text("\n".join([owner, *lines]) + "\n")
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_reload_conf()"))


def refused_without_password(url: URL) -> bool:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            return False
    except OperationalError:
        return True
    finally:
        engine.dispose()


@pytest.mark.parametrize("broker", [CANARY], indirect=True, ids=["requirepass"])
def test_k_canary_password_is_absent_from_logs_dead_letters_and_inspect_conf(
    stack: LiveStack,
    pg: PostgresServer,
    broker: RedisServer,
    db: Engine,
    figure: Callable[[str], None],
) -> None:
    # Given PostgreSQL (for the worker's runtime role) and Redis that need the canary password
    post = add_posts(db, 1)[0]
    require_password(pg, db)
    runtime_url = as_runtime_role(make_url(pg.url))
    wait_until(lambda: refused_without_password(runtime_url), 30, 0.1, "password logins")
    database_url = runtime_url.set(password=CANARY)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=broker.port).ping()
    assert CANARY in broker.url
    # and a worker with both passwords in its URLs, logging at DEBUG with SQL echo on
    stack.env.update(
        DATABASE_URL=database_url.render_as_string(hide_password=False), DB_ECHO_SQL="true"
    )
    worker = stack.start_worker(concurrency=1, extra_args=["-l", "DEBUG"])

    # When it runs good tasks and failing ones (unknown post, bad arguments, oversized, unknown)
    with stack.producer() as client:
        for i in range(5):
            stack.send(client, RECORD_VIEW, post, task_id=f"good-{i}")
        stack.send(client, RECORD_VIEW, 999_999, task_id="missing-post")
        stack.send(client, RECORD_VIEW, "1; DROP TABLE posts", task_id="bad-args")
        client.send_task(RECORD_VIEW, [post], {"pad": "x" * 100_000}, task_id="oversized")
        client.send_task("tasks.nope", [post], task_id="unknown-task", queue=stack.queue)
    wait_until(lambda: processed(db) == 5 and failures(db) == 4, 60, 0.1, "all tasks")
    # and an operator asks the worker for its configuration
    node = f"{worker.name}@{socket.gethostname()}"  # named, so inspect returns on its reply
    inspect = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "conf", "-d", node],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    with db.connect() as connection:
        rows = connection.scalars(text("SELECT t::text FROM task_failures t")).all()

    # Then the canary is in none of them (and the log really is DEBUG with SQL in it)
    log_lines = worker.log().splitlines()
    inspect_out = inspect.stdout + inspect.stderr
    leaks = {
        "log": sum(CANARY in line for line in log_lines),
        "task_failures": sum(CANARY in row for row in rows),
        "inspect conf": inspect_out.count(CANARY),
    }
    figure(
        f"FAULT k: canary found {leaks['log']}x in {len(log_lines)} worker log lines (DEBUG, "
        f"SQL echo), {leaks['task_failures']}x in {len(rows)} task_failures rows, "
        f"{leaks['inspect conf']}x in inspect conf ({len(inspect_out)} chars); "
        "redis requirepass + scram login of the runtime role in use"
    )
    assert leaks == {"log": 0, "task_failures": 0, "inspect conf": 0}
    assert inspect.returncode == 0, inspect_out
    assert "broker_url" in inspect.stdout
    assert f"{node}: OK" in inspect.stdout
    assert any("DEBUG/" in line for line in log_lines)
    assert any("UPDATE posts" in line for line in log_lines)
    assert len(rows) == 4
