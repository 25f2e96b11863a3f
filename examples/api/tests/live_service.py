"""Process helpers for the end-to-end test: start, watch and stop uvicorn and a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

import worker as worker_package

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = Path(worker_package.__file__).resolve().parent.parent


def wait_until(
    condition: Callable[[], object], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Process:
    """A background process of the test, with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown of the whole group
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)


def start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Process:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,  # where `celery -A worker.app` finds celeryconfig
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, proc, log_path)


@dataclass
class Service:
    """The running example: its base URL and a database engine for Then steps."""

    url: str
    db: Engine
    worker: Process
    api: Process
