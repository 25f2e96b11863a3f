"""`make services` / `make stop-services`: a URL the user set is never silently replaced."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.development.binaries import MissingBinary
from worker.development.processes import free_port, run_python
from worker.development.reachability import postgres_reachable, redis_reachable
from worker.development.servers import PostgresServer, RedisServer
from worker.development.services import Wanted, ensure_service


def services_cli(*args: str, local: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    services = ("-m", "worker.development.services")
    return run_python({**os.environ, **env}, *services, *args, "--dir", str(local))


def test_an_unreachable_url_the_user_set_fails_with_the_reason(tmp_path: Path) -> None:
    # Given DATABASE_URL and REDIS_URL set by the user, on a port nothing listens on
    closed = free_port()
    env = {
        "DATABASE_URL": f"postgresql+psycopg2://app:hunter2@127.0.0.1:{closed}/app",
        "REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/3",
    }
    local, env_file = tmp_path / "local", tmp_path / "services.env"

    # When `make services` runs
    result = services_cli("ensure", "--env-file", str(env_file), local=local, env=env)

    # Then it fails with one line per URL saying which and why, and starts nothing in their place
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"error: DATABASE_URL=postgresql+psycopg2://app:***@127.0.0.1:{closed}/app is not "
        "reachable (connection refused); it is set, so no project-local server stands in: "
        "start that server or unset DATABASE_URL",
        f"error: REDIS_URL=redis://:***@127.0.0.1:{closed}/3 is not reachable (connection "
        "refused); it is set, so no project-local server stands in: start that server or "
        "unset REDIS_URL",
    ]
    assert result.stdout == ""
    assert not env_file.exists()
    assert not (local / "postgres").exists()
    assert not (local / "redis").exists()


def test_a_malformed_setting_fails_before_any_server_starts(tmp_path: Path) -> None:
    result = services_cli(
        "ensure", local=tmp_path / "local", env={"REDIS_URL": "http://:hunter2@cache:6379"}
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: invalid setting REDIS_URL='http://:***@cache:6379': expected "
        "redis://[:PASSWORD@]HOST:PORT/DB (or rediss://..., unix:///PATH)"
    ]
    assert not (tmp_path / "local").exists()


@pytest.fixture
def local_dir(tmp_path: Path) -> Iterator[Path]:
    """A project-local services directory whose servers are stopped at the end, whatever happens."""
    local = tmp_path / "local"
    yield local
    services_cli("stop", local=local, env={})


def test_unset_urls_get_project_local_servers_that_stop_services_stops(local_dir: Path) -> None:
    # Given URLs nobody set (the defaults), with nothing answering at them
    closed = free_port()
    wanted = [
        Wanted(
            "DATABASE_URL", f"postgresql+psycopg2://postgres@127.0.0.1:{closed}/postgres", False
        ),
        Wanted("REDIS_URL", f"redis://127.0.0.1:{closed}/0", False),
    ]
    local_dir.mkdir()
    servers = {
        "postgres": PostgresServer(local_dir / "postgres"),
        "redis": RedisServer(local_dir / "redis", daemonize=True),
    }

    # When services are ensured, project-local servers stand in for them
    try:
        in_use = {
            each.variable: ensure_service(each, servers[each.service], local_dir) for each in wanted
        }
    except MissingBinary as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    assert postgres_reachable(in_use["DATABASE_URL"])
    assert redis_reachable(in_use["REDIS_URL"])

    # And a shell that exported their URLs gets the same servers back after they stop
    for server in servers.values():
        server.stop()
    env_file = local_dir / "services.env"
    again = services_cli("ensure", "--env-file", str(env_file), local=local_dir, env=in_use)
    assert again.returncode == 0, again.stderr
    exported = dict(shlex.split(line)[1].split("=", 1) for line in again.stdout.splitlines())
    assert exported == in_use
    assert redis_reachable(in_use["REDIS_URL"])
    assert postgres_reachable(in_use["DATABASE_URL"])

    # When `make stop-services` runs
    stopped = services_cli("stop", "--env-file", str(env_file), local=local_dir, env={})

    # Then the servers are gone, and so is the env file that pointed at them
    assert stopped.returncode == 0, stopped.stderr
    assert not redis_reachable(in_use["REDIS_URL"])
    assert not postgres_reachable(in_use["DATABASE_URL"])
    assert not env_file.exists()


def test_stop_services_keeps_an_env_file_that_names_other_servers(tmp_path: Path) -> None:
    env_file = tmp_path / "services.env"
    env_file.write_text(
        "DATABASE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres\n"
        "REDIS_URL=redis://127.0.0.1:6379/0\n"
    )
    stopped = services_cli("stop", "--env-file", str(env_file), local=tmp_path / "local", env={})
    assert stopped.returncode == 0, stopped.stderr
    assert env_file.exists()
