"""Fault k in JSON: with LOG_FORMAT=json, a canary password of both servers is in no log line.

The JSON lines add what the text lines leave out (a banner as one line, `extra` fields, the
exception field, the task fields), so the canary test of `test_secrets.py` runs in this format too.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.steps import RECORD_VIEW, add_posts, failures, processed
from worker.development.databases import TEST_RUNTIME_ROLE, as_runtime_role
from worker.development.live import LiveStack, wait_until
from worker.development.services import PostgresServer, RedisServer

CANARY = f"canary-{secrets.token_hex(8)}"  # URL-safe, so it reads the same quoted or not


def require_the_runtime_roles_password(pg: PostgresServer, owner: Engine) -> None:
    """The runtime role's TCP logins need its password (the canary); the owner keeps trust."""
    with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"ALTER ROLE {TEST_RUNTIME_ROLE} PASSWORD '{CANARY}'"))
    hba = pg.data_dir / "pg_hba.conf"
    rules = [
        re.sub(r"trust\s*$", "scram-sha-256", line) if line.startswith("host") else line
        for line in hba.read_text().splitlines()
    ]
    hba.write_text("host all postgres 127.0.0.1/32 trust\n" + "\n".join(rules) + "\n")
    with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SELECT pg_reload_conf()"))


@pytest.mark.parametrize("broker", [CANARY], indirect=True, ids=["requirepass"])
def test_json_logs_keep_the_canary_password_of_both_servers_out(
    stack: LiveStack,
    pg: PostgresServer,
    broker: RedisServer,
    db: Engine,
    figure: Callable[[str], None],
) -> None:
    # Given PostgreSQL and Redis that both need the canary password
    (post,) = add_posts(db, 1)
    require_the_runtime_roles_password(pg, db)
    assert CANARY in broker.url
    # and a worker with both passwords in its URLs, logging JSON at DEBUG with SQL echo on
    runtime = as_runtime_role(make_url(pg.url)).set(password=CANARY)
    stack.env.update(
        DATABASE_URL=runtime.render_as_string(hide_password=False),
        DB_ECHO_SQL="true",
        LOG_FORMAT="json",
    )
    worker = stack.start_worker(concurrency=1, extra_args=["-l", "DEBUG"])

    # When it runs good tasks and failing ones (unknown post, bad arguments, unknown task)
    with stack.producer() as client:
        for i in range(3):
            stack.send(client, RECORD_VIEW, post, task_id=f"good-{i}")
        stack.send(client, RECORD_VIEW, 999_999, task_id="missing-post")
        stack.send(client, RECORD_VIEW, "1; DROP TABLE posts", task_id="bad-args")
        client.send_task("tasks.nope", [post], task_id="unknown-task", queue=stack.queue)
    wait_until(lambda: processed(db) == 3 and len(failures(db)) == 3, 60, 0.1, "all tasks")
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
