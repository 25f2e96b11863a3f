"""Helpers for tests that run a real `celery worker` and a producer that imports nothing of ours."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def child_pids(pid: int) -> set[int]:
    """The live child processes of `pid` (the prefork pool)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(p) for p in out.split()}


@dataclass
class LiveWorker:
    """A `celery -A worker.app worker` process started by a test."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    name: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> set[int]:
        return child_pids(self.pid)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, timeout, 0.1, f"worker {self.name} to be ready")

    def stop(self, timeout: float = 60.0) -> int:
        """Warm shutdown (SIGTERM): running tasks finish first."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            pool = self.children()
            self.proc.kill()
            for pid in pool:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(30)


@dataclass
class LiveStack:
    """Environment for live workers: a database, a Redis URL and a queue of the test's own."""

    env: dict[str, str]
    tmp: Path
    workers: list[LiveWorker] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.env["TASK_QUEUE"]

    def start_worker(
        self,
        concurrency: int | None = 2,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> LiveWorker:
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        log_path = self.tmp / f"{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "-P", "prefork", *(["-c", str(concurrency)] if concurrency is not None else []),
            "-Q", self.queue, "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
            *extra_args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = LiveWorker(proc, log_path, name)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    @contextmanager
    def producer(self) -> Iterator[Celery]:
        """A Celery client configured like an API service that imports nothing from this project."""
        # Not the current app: shared tasks of later eager tests must keep resolving to ours.
        client = Celery("producer", broker=self.env["REDIS_URL"], set_as_current=False)
        client.conf.update(
            task_serializer="json", accept_content=["json"], task_default_queue=self.queue
        )
        try:
            yield client
        finally:
            client.close()

    def send(self, client: Celery, name: str, *args: Any, **options: Any) -> str:
        result = client.send_task(name, args=list(args), queue=self.queue, **options)
        return str(result.id)

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=30)
