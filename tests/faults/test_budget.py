"""The connection budget against a real server (max_connections 200, 3 reserved for superusers):
a node that alone would overrun it does not start, one that fits says its worst case and starts
holding nothing in its main process, and `db budget` sizes a fleet against it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import Engine

from tests.steps import worker_backends
from worker.development.live import LiveStack, wait_until
from worker.development.processes import run_cli

SERVER = "max_connections 200 - superuser_reserved_connections 3"


def test_a_node_over_the_servers_limit_refuses_to_start_naming_the_settings(
    stack: LiveStack, db: Engine
) -> None:
    # Given a server that gives workers 197 connections, and a node of 4 children whose
    # pools could hold 50 each
    worker = stack.start_worker(concurrency=4, env={"DB_POOL_SIZE": "50"}, wait=False)

    # When it starts, then it exits before forking any child, saying which settings to change
    wait_until(lambda: not worker.running(), timeout=60, what="the worker to exit")
    assert worker.proc.returncode == 1, worker.log()
    log = worker.log()
    assert "refusing to start: this node alone may open 201 PostgreSQL connections" in log
    assert "4 children x (DB_POOL_SIZE 50 + DB_MAX_OVERFLOW 0) + 1 main process" in log
    assert f"more than the 197 allowed ({SERVER})" in log
    assert " ready." not in log
    # And the check's own connection is gone with it
    assert not worker_backends(db, stack.env["APP_NAME"])


def test_a_node_within_the_limit_logs_its_worst_case_and_its_main_process_holds_nothing(
    stack: LiveStack, db: Engine, tmp_path: Path
) -> None:
    # Given a node of 2 children with an embedded beat, on the default pool settings
    worker = stack.start_worker(
        concurrency=2, extra_args=["--beat", "--schedule", str(tmp_path / "beat-schedule")]
    )

    # Then it logged its worst case against the server's limit before it was ready
    budget_line = (
        "connection budget: this node may open 4 PostgreSQL connections (2 children x "
        f"(DB_POOL_SIZE 1 + DB_MAX_OVERFLOW 0) + 1 main process + 1 embedded beat); 197 "
        f"allowed ({SERVER})"
    )
    log = worker.log()
    assert budget_line in log
    assert log.index(budget_line) < log.index(" ready.")
    # And the main process closed the connection it checked with (children connect lazily)
    wait_until(
        lambda: worker.pid not in worker_backends(db, stack.env["APP_NAME"]),
        timeout=10,
        what="the main process to hold no connection",
    )


def budget(stack: LiveStack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(stack.env, "db", "budget", *args, timeout=60)  # as workers log in


def test_budget_command_sizes_a_fleet_against_the_servers_limit(stack: LiveStack) -> None:
    # When an operator sizes fleets of 6-child nodes: 28 nodes x 7 + beat 1 = 197
    fits = budget(stack, "--nodes", "28", "--children", "6")
    overruns = budget(stack, "--nodes", "29", "--children", "6")

    # Then the largest fleet that fits passes, one node more fails, each with the figures
    assert fits.returncode == 0, fits.stderr
    assert "per node: 7 (6 children x (DB_POOL_SIZE 1 + DB_MAX_OVERFLOW 0)" in fits.stdout
    assert "fleet: 197 (28 nodes x 7 + beat 1)" in fits.stdout
    assert f"limit: 197 ({SERVER})" in fits.stdout
    assert "in use now: " in fits.stdout
    assert overruns.returncode == 1
    assert "fleet: 204 (29 nodes x 7 + beat 1)" in overruns.stdout
    assert "29 nodes would overrun the limit by 7 connections" in overruns.stderr
