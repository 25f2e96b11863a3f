"""Fault k: a canary password on both servers never leaks, from the command that sets it to the
worker's DEBUG log (text and JSON), `celery inspect conf` and the dead letters.

The JSON lines add what the text lines leave out (a banner as one line, `extra` fields, the
exception field, the task fields), so the canary test runs in that format too.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from tests.steps import RECORD_VIEW, add_posts, failures, processed
from worker.development.databases import TEST_RUNTIME_ROLE, as_runtime_role, unpooled
from worker.development.live import LiveStack, wait_until
from worker.development.processes import run_cli
from worker.development.servers import PostgresServer, RedisServer

CANARY = f"canary-{secrets.token_hex(8)}"  # URL-safe, so it reads the same quoted or not
# Redis of every test here needs the canary password.
pytestmark = pytest.mark.parametrize("broker", [CANARY], indirect=True, ids=["requirepass"])


def require_passwords_except_the_owners(pg: PostgresServer, owner: Engine) -> None:
    """TCP logins need scram-sha-256, except the owner's; every statement goes to the log."""
    hba = pg.data_dir / "pg_hba.conf"
    rules = [
        re.sub(r"trust\s*$", "scram-sha-256", line) if line.startswith("host") else line
        for line in hba.read_text().splitlines()
    ]
    hba.write_text("host all postgres 127.0.0.1/32 trust\n" + "\n".join(rules) + "\n")
    with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ALTER SYSTEM SET log_statement = 'all'"))
        connection.execute(text("SELECT pg_reload_conf()"))


def send_good_and_failing_tasks(stack: LiveStack, db: Engine, post: int, good: int) -> None:
    """`good` views of `post`, and four tasks that fail for good (unknown post, bad arguments,
    oversized, unknown task); returns once all are done."""
    with stack.producer() as client:
        for i in range(good):
            stack.send(client, RECORD_VIEW, post, task_id=f"good-{i}")
        stack.send(client, RECORD_VIEW, 999_999, task_id="missing-post")
        stack.send(client, RECORD_VIEW, "1; DROP TABLE posts", task_id="bad-args")
        client.send_task(RECORD_VIEW, [post], {"pad": "x" * 100_000}, task_id="oversized")
        client.send_task("tasks.nope", [post], task_id="unknown-task", queue=stack.queue)
    done = f"{good} views and 4 dead letters"
    wait_until(lambda: processed(db) == good and len(failures(db)) == 4, 60, 0.1, done)


def logs_in(url: URL) -> bool:
    try:
        with unpooled(url) as engine, engine.connect() as connection:
            return bool(connection.scalar(text("SELECT current_user")) == url.username)
    except OperationalError:
        return False


def test_canary_password_of_both_servers_leaks_nowhere(
    stack: LiveStack,
    pg: PostgresServer,
    broker: RedisServer,
    db: Engine,
    figure: Callable[[str], None],
) -> None:
    # Given PostgreSQL where every login but the owner's needs a password, logging every
    # statement, and Redis whose password is the canary
    (post,) = add_posts(db, 1)
    require_passwords_except_the_owners(pg, db)
    runtime = as_runtime_role(make_url(pg.url))
    wait_until(lambda: not logs_in(runtime), 30, 0.1, "logins without a password refused")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=broker.port).ping()

    # When the owner gives the runtime role the canary password, read from the environment
    owner_env = {**stack.env, "DATABASE_URL": pg.url, "RUNTIME_PASSWORD": CANARY}
    command = ["db", "create-runtime-role", TEST_RUNTIME_ROLE]
    created = run_cli(owner_env, *command, "--password-env", "RUNTIME_PASSWORD")
    assert created.returncode == 0, created.stderr
    # Then the role logs in with that password only
    assert logs_in(runtime.set(password=CANARY))
    assert not logs_in(runtime.set(password="wrong"))

    # When a worker with both passwords in its URLs, logging at DEBUG with SQL echo on, runs good
    # tasks and failing ones (unknown post, bad arguments, oversized, unknown task)
    with_password = runtime.set(password=CANARY).render_as_string(hide_password=False)
    stack.env.update(DATABASE_URL=with_password, DB_ECHO_SQL="true")
    worker = stack.start_worker(concurrency=1, extra_args=["-l", "DEBUG"])
    send_good_and_failing_tasks(stack, db, post, good=5)
    # and an operator asks the worker for its configuration
    inspect = stack.inspect(worker, "conf")
    with db.connect() as connection:
        rows = connection.scalars(text("SELECT t::text FROM task_failures t")).all()

    # Then the canary is in none of them: the server logged only a SCRAM verifier
    server_log = pg.log_file.read_text(errors="replace")
    log_lines = worker.log().splitlines()
    inspect_out = inspect.stdout + inspect.stderr
    leaks = {
        "server log": server_log.count(CANARY),
        "command output": (created.stdout + created.stderr).count(CANARY),
        "worker log": sum(CANARY in line for line in log_lines),
        "task_failures": sum(CANARY in row for row in rows),
        "inspect conf": inspect_out.count(CANARY),
    }
    figure(
        f"FAULT k: canary found {leaks['worker log']}x in {len(log_lines)} worker log lines "
        f"(DEBUG, SQL echo), {leaks['task_failures']}x in {len(rows)} task_failures rows, "
        f"{leaks['inspect conf']}x in inspect conf ({len(inspect_out)} chars), "
        f"{leaks['server log']}x in the server's statement log; redis requirepass + scram login "
        "of the runtime role in use"
    )
    assert leaks == dict.fromkeys(leaks, 0)
    assert "ALTER ROLE" in server_log
    assert "SCRAM-SHA-256$4096:" in server_log
    assert inspect.returncode == 0, inspect_out
    assert "broker_url" in inspect.stdout
    assert f"{worker.node}: OK" in inspect.stdout
    assert any("DEBUG/" in line for line in log_lines)
    assert any("UPDATE posts" in line for line in log_lines)
    assert len(rows) == 4


def test_json_logs_keep_the_canary_password_of_both_servers_out(
    stack: LiveStack, pg: PostgresServer, db: Engine, figure: Callable[[str], None]
) -> None:
    # Given PostgreSQL and Redis that both need the canary password
    (post,) = add_posts(db, 1)
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"ALTER ROLE {TEST_RUNTIME_ROLE} PASSWORD '{CANARY}'"))
    require_passwords_except_the_owners(pg, db)
    assert CANARY in stack.redis_url
    # and a worker with both passwords in its URLs, logging JSON at DEBUG with SQL echo on
    runtime = as_runtime_role(make_url(pg.url)).set(password=CANARY)
    stack.env.update(
        DATABASE_URL=runtime.render_as_string(hide_password=False),
        DB_ECHO_SQL="true",
        LOG_FORMAT="json",
    )
    worker = stack.start_worker(concurrency=1, extra_args=["-l", "DEBUG"])

    # When it runs good tasks and failing ones
    send_good_and_failing_tasks(stack, db, post, good=3)
    worker.stop()

    # Then every line is JSON, at DEBUG with SQL in it, and the canary is in none of them
    lines = [json.loads(line) for line in worker.log().splitlines()]
    leaks = sum(CANARY in json.dumps(line) for line in lines)
    figure(
        f"FAULT k (json): canary found {leaks}x in {len(lines)} JSON worker log lines (DEBUG, "
        "SQL echo); redis requirepass + scram login of the runtime role in use"
    )
    assert leaks == 0
    assert any(line["level"] == "DEBUG" for line in lines)
    assert any("UPDATE posts" in line["message"] for line in lines)
    [banner] = [line for line in lines if " starting\n" in line["message"]]
    assert ":**@" in banner["message"]  # the broker URL, its password masked
    assert any(line.get("task_id") == "missing-post" for line in lines)
