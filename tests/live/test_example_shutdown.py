"""`make example` (examples/api/run.py) stopped by a signal leaves nothing running or listening."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker.development.live import PROJECT_ROOT, LiveStack, wait_until
from worker.development.processes import free_port, pid_alive, port_in_use, proc_stat

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`: children, their children, and so on."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(entry.name)
        if len(stat) > 1:
            parents[int(entry.name)] = int(stat[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@dataclass
class Example:
    """run.py as `make example` starts it, on a port, queue and Redis database of the test's own."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    family: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self) -> None:
        """Wait for the API to listen and the worker to be ready; note every process started."""

        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"run.py exited with {self.proc.returncode}:\n{self.log()}")
            return port_in_use(self.port) and " ready." in self.log()

        wait_until(serving, 90, 0.1, "the API listening and the worker ready")
        self.family = descendants(self.proc.pid)
        assert len(self.family) >= 5, "uvicorn, the worker, its two pool children and beat"

    def child(self, program: bytes) -> int:
        """The pid of run.py's child whose command line mentions `program`."""
        for pid in self.family:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if proc_stat(pid)[1:2] == [str(self.proc.pid)] and program in cmdline:
                return pid
        raise AssertionError(f"no {program!r} child")

    def assert_all_gone(self) -> None:
        wait_until(lambda: not any(map(pid_alive, self.family)), 30, 0.1, "no process left")
        assert not port_in_use(self.port)


@pytest.fixture
def example(live_stack: LiveStack, tmp_path: Path) -> Iterator[Example]:
    port, log_path = free_port(), tmp_path / "example.log"
    command = [sys.executable, "examples/api/run.py", "--port", str(port)]
    command += ["--schedule", str(tmp_path / "beat-schedule")]
    with log_path.open("wb") as output:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=live_stack.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Example(proc, port, log_path)
    try:
        yield running
    finally:
        for pid in {proc.pid, *running.family}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_example_leaves_no_process_and_no_open_port(
    example: Example, stop_signal: signal.Signals
) -> None:
    # Given the example serving
    example.wait_serving()

    # When it is stopped by a signal (SIGTERM from a supervisor or `make`, SIGINT from Ctrl-C)
    example.proc.send_signal(stop_signal)

    # Then it exits cleanly, and every process it started is gone, the port closed with them
    assert example.proc.wait(90) == 0, example.log()
    example.assert_all_gone()


def test_the_example_stops_when_its_worker_dies(example: Example) -> None:
    # Given the example serving
    example.wait_serving()

    # When its worker is killed
    os.kill(example.child(b"celery"), signal.SIGKILL)

    # Then the API stops too, instead of serving with no worker behind it
    assert example.proc.wait(90) == 1
    assert "the worker exited with status -9; stopping" in example.log()
    example.assert_all_gone()
