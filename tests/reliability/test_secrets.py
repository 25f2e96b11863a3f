"""Passwords: the runtime role's is set without ever reaching the server, and no password leaks."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.conftest import live_env
from tests.livecelery import ROOT, LiveStack, wait_until
from tests.reliability.helpers import add_posts, failure, views
from worker.config import ConfigError, Settings, load_settings
from worker.development.databases import migrate
from worker.development.services import MissingBinary, PostgresServer, RedisServer, free_port

pytestmark = pytest.mark.integration

CANARY = f"canary-{secrets.token_hex(8)}"
ROLE = "canary_runtime"


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresServer]:
    """A throwaway cluster that logs every statement; the owner `postgres` is trusted."""
    server = PostgresServer(tmp_path / "pg")
    try:
        server.start()
    except MissingBinary as error:
        pytest.skip(str(error))
    try:
        migrate(server.url)
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.data_dir, ignore_errors=True)


def require_passwords_except_owner(pg: PostgresServer, owner: Engine) -> None:
    """TCP logins need scram-sha-256, except the owner's; every statement goes to the log."""
    hba = pg.data_dir / "pg_hba.conf"
    rules = [re.sub(r"trust\s*$", "scram-sha-256", line) for line in hba.read_text().splitlines()]
    hba.write_text("host all postgres 127.0.0.1/32 trust\n" + "\n".join(rules) + "\n")
    with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ALTER SYSTEM SET log_statement = 'all'"))
        connection.execute(text("SELECT pg_reload_conf()"))


def test_runtime_role_with_a_password_runs_tasks_and_no_password_leaks(
    pg: PostgresServer, tmp_path: Path
) -> None:
    owner = create_engine(pg.url, poolclass=NullPool)
    redis_server = RedisServer(tmp_path / "redis", password=CANARY)
    redis_server.start()
    try:
        # Given a cluster where the worker's role must log in with a password
        require_passwords_except_owner(pg, owner)
        (post,) = add_posts(owner, 1)

        # When the owner creates the runtime role, the password coming from the environment
        env = {**live_env(make_url(pg.url), redis_server.url), "RUNTIME_PASSWORD": CANARY}
        command = [sys.executable, "-m", "worker", "db", "create-runtime-role", ROLE]
        created = subprocess.run(
            [*command, "--password-env", "RUNTIME_PASSWORD"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        runtime_url = make_url(pg.url).set(username=ROLE, password=CANARY)

        # Then the role logs in with that password only
        def login(url: object) -> bool:
            engine = create_engine(url, poolclass=NullPool)  # type: ignore[call-overload]
            try:
                with engine.connect() as connection:
                    return connection.scalar(text("SELECT current_user")) == ROLE
            except OperationalError:
                return False
            finally:
                engine.dispose()

        wait_until(lambda: login(runtime_url), 30, 0.2, "scram login as the runtime role")
        assert not login(runtime_url.set(password="wrong"))

        # And a worker logging in as it, through a Redis that needs the same password, works
        stack = LiveStack(
            live_env(runtime_url, redis_server.url, DB_ECHO_SQL="true"), tmp_path / "stack"
        )
        (tmp_path / "stack").mkdir()
        try:
            worker = stack.start_worker(concurrency=1, extra_args=["-l", "DEBUG"])
            with stack.producer() as client:
                stack.send(client, "tasks.posts.record_view", post, task_id="good")
                stack.send(client, "tasks.posts.record_view", 424_242, task_id="missing")
            wait_until(lambda: views(owner, post) == 1, 60, what="the view")
            wait_until(lambda: failure(owner, "missing"), 60, what="the dead letter")
            # And an operator asks the worker for its configuration
            node = f"{worker.name}@{socket.gethostname()}"
            inspect = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "conf", "-d", node],
                cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            log = worker.log()
        finally:
            stack.shutdown()

        # And the password is nowhere: not in the server's statement log (only a SCRAM
        # verifier was sent), the command output, the DEBUG log, inspect conf or dead letters
        server_log = pg.log_file.read_text(errors="replace")
        assert "ALTER ROLE" in server_log
        assert "SCRAM-SHA-256$4096:" in server_log
        assert "UPDATE posts" in log
        assert inspect.returncode == 0, inspect.stderr
        assert "broker_url" in inspect.stdout
        with owner.connect() as connection:
            rows = connection.scalars(text("SELECT t::text FROM task_failures t")).all()
        for where, content in {
            "server log": server_log,
            "command output": created.stdout + created.stderr,
            "worker log": log,
            "inspect conf": inspect.stdout + inspect.stderr,
            "task_failures": "\n".join(rows),
        }.items():
            assert CANARY not in content, where
    finally:
        redis_server.stop()
        owner.dispose()


def test_errors_about_urls_do_not_show_their_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    # A malformed setting: the error names the variable, not its value
    monkeypatch.setenv("DATABASE_URL", f"mysql://user:{CANARY}@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", f"http://:{CANARY}@127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as config_error:
        load_settings()
    assert "DATABASE_URL" in str(config_error.value)
    assert "REDIS_URL" in str(config_error.value)
    assert CANARY not in str(config_error.value)

    # A failed connection, and the settings' own repr
    url = f"postgresql+psycopg2://u:{CANARY}@127.0.0.1:{free_port()}/db"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("REDIS_URL", f"redis://:{CANARY}@127.0.0.1:6379/0")
    settings = Settings()
    engine = create_engine(settings.sqlalchemy_url, poolclass=NullPool)
    with pytest.raises(OperationalError) as connect_error:
        engine.connect()
    for shown in (str(connect_error.value), repr(settings), str(settings.sqlalchemy_url)):
        assert CANARY not in shown
