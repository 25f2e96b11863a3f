"""Bad command-line arguments: every command refuses them with exit 2 and one line naming the
option, before it touches a server; none ends in a traceback or a busy loop."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from worker.development.processes import free_port, run_cli
from worker.operations.cli import main


@pytest.mark.parametrize(
    ("argv", "option", "reason"),
    [
        # nan compares false with both bounds of click.FloatRange: it used to reach the socket
        # (a traceback) and Event.wait (a relay loop without pause).
        (["health", "--timeout", "nan"], "--timeout", "not a number of seconds"),
        (["health", "--timeout", "inf"], "--timeout", "not in the range"),
        (["health", "--timeout", "0"], "--timeout", "not in the range"),
        (["health", "--timeout", "2s"], "--timeout", "not a valid number of seconds"),
        (["outbox", "relay", "--loop", "--interval", "nan"], "--interval", "not a number"),
        (["outbox", "relay", "--loop", "--interval", "-1"], "--interval", "not in the range"),
        (["outbox", "relay", "--loop", "--interval", "0"], "--interval", "not in the range"),
        (["outbox", "relay", "--batch-size", "0"], "--batch-size", "not in the range"),
        (["outbox", "prune", "--older-than-days", "-1"], "--older-than-days", "not in the range"),
        (["db", "budget", "--nodes", "0"], "--nodes", "not in the range"),
        (["db", "budget", "--nodes", "three"], "--nodes", "not a valid integer"),
        (["db", "budget", "--children", "-3"], "--children", "not in the range"),
        (["failures", "list", "--limit", "-5"], "--limit", "not in the range"),
        (["failures", "purge", "--older-than", "-1"], "--older-than", "not in the range"),
        (["quarantine", "list", "--limit", "0"], "--limit", "not in the range"),
    ],
)
def test_a_bad_argument_is_refused_with_the_option_named(
    argv: list[str], option: str, reason: str
) -> None:
    result = CliRunner().invoke(main, argv)

    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert reason in result.output
    assert "Traceback" not in result.output


def test_health_without_a_worker_exits_1_naming_the_address() -> None:
    port = free_port()  # nobody listens there
    env = {**os.environ, "WORKER_HTTP_PORT": str(port)}

    done = run_cli(env, "health", "--ready", "--timeout", "0.5", timeout=60)

    assert done.returncode == 1, done.stderr
    assert f"no answer on 127.0.0.1:{port}/readyz" in done.stderr
    assert "Traceback" not in done.stderr
