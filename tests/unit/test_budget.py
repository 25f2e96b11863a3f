"""The connection budget's arithmetic, its refusal message, and `db budget` against a set limit."""

from __future__ import annotations

import os
import subprocess

from pydantic import SecretStr

from worker.config import Settings
from worker.development.processes import run_cli
from worker.operations.budget import FleetBudget, Limit, NodeBudget, over_budget

SERVER_OF_100 = Limit(97, "max_connections 100 - superuser_reserved_connections 3")
# Nothing listens there: a command that tried to connect would fail.
NO_SERVER = "postgresql+psycopg2://nobody@127.0.0.1:1/nothing"


def test_a_child_of_the_default_settings_counts_one_connection() -> None:
    settings = Settings(database_url=SecretStr(NO_SERVER))

    node = NodeBudget.of(settings, children=6)

    assert (node.per_process, node.total) == (1, 6 + 1)
    assert NodeBudget.of(settings, children=6, beat=True).total == 6 + 1 + 1
    assert FleetBudget(nodes=13, node=node).total == 13 * 7 + 1


def test_the_old_defaults_let_two_nodes_overrun_a_default_server() -> None:
    old = NodeBudget(children=6, pool_size=2, max_overflow=10)

    assert old.total == 6 * 12 + 1
    assert over_budget(old, SERVER_OF_100) is None
    assert FleetBudget(nodes=2, node=old).total == 2 * 73 + 12 > SERVER_OF_100.allowed


def test_a_node_over_the_limit_is_refused_naming_the_settings_and_the_server_figures() -> None:
    node = NodeBudget(children=8, pool_size=2, max_overflow=10, beat=True)

    refusal = over_budget(node, SERVER_OF_100)

    assert refusal is not None
    assert "may open 109 PostgreSQL connections" in refusal
    assert "8 children x (DB_POOL_SIZE 2 + DB_MAX_OVERFLOW 10) + 1 main process" in refusal
    assert "+ 12 embedded beat" in refusal
    assert "97 allowed (max_connections 100 - superuser_reserved_connections 3)" in refusal
    assert "WORKER_CONCURRENCY" in refusal
    assert "DB_CONNECTION_LIMIT" in refusal


def test_a_node_exactly_at_the_limit_starts() -> None:
    assert over_budget(NodeBudget(children=96, pool_size=1, max_overflow=0), SERVER_OF_100) is None
    assert over_budget(NodeBudget(children=97, pool_size=1, max_overflow=0), SERVER_OF_100)


def budget_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": NO_SERVER, **env}
    return run_cli(environment, "db", "budget", *args, timeout=60)


def test_budget_command_exits_1_only_when_the_fleet_would_overrun_the_set_limit() -> None:
    # Given DB_CONNECTION_LIMIT (PgBouncer's max_client_conn): no server is asked
    fits = budget_command("--nodes", "2", "--children", "6", DB_CONNECTION_LIMIT="15")
    overruns = budget_command("--nodes", "2", "--children", "6", DB_CONNECTION_LIMIT="14")

    assert fits.returncode == 0, fits.stderr
    assert fits.stdout.splitlines() == [
        "per node: 7 (6 children x (DB_POOL_SIZE 1 + DB_MAX_OVERFLOW 0) + 1 main process)",
        "beat: 1 (one per fleet, embedded in a worker or on its own)",
        "fleet: 15 (2 nodes x 7 + beat 1)",
        "limit: 15 (DB_CONNECTION_LIMIT 15)",
    ]
    assert overruns.returncode == 1
    assert "2 nodes would overrun the limit by 1 connection:" in overruns.stderr


def test_budget_command_says_why_when_the_server_cannot_be_asked() -> None:
    done = budget_command("--nodes", "2")

    assert done.returncode == 1
    assert "cannot read the server's connection limit" in done.stderr
    assert "Traceback" not in done.stderr
