"""Live workers for tests, benchmarks and examples: start, wait until ready, publish by name, stop.

A worker is a real `celery -A worker.app worker` process in a process group of its own, logging
to a file. Its producer is a bare Celery client that imports nothing of this package, the way
an API service publishes. Every stack has a queue and an APP_NAME of its own, so stacks can share
one PostgreSQL server and one Redis database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy.engine import URL

# Tests, benchmarks and examples take wait_until and PROJECT_ROOT from here too.
from worker.development.processes import PROJECT_ROOT, free_port, run_python, wait_until

_SEP = "\x06\x16"  # between the fields of a kombu binding, and a queue and its priority


@dataclass
class LiveProcess:
    """A background process (a worker, an API server), with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Fail with the process's log if it has exited."""
        if not self.running():
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (for a worker, a warm shutdown: running tasks finish); SIGKILL after `timeout`.

        Returns the exit status.
        """
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process and whatever it started (a worker's pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(30)


def start_process(
    name: str, command: list[str], env: Mapping[str, str], logs: Path, cwd: Path = PROJECT_ROOT
) -> LiveProcess:
    """Start `command` in a process group of its own, its output going to `logs/<name>.log`."""
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return LiveProcess(name, proc, log_path)


@dataclass
class LiveWorker(LiveProcess):
    """A `celery -A worker.app worker` process, named `<name>@<host>`."""

    @property
    def node(self) -> str:
        """The node name `celery inspect -d` and remote control take."""
        return f"{self.name}@{socket.gethostname()}"

    def children(self) -> set[int]:
        """The live pool processes."""
        listed = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        return {int(pid) for pid in listed.stdout.split()}

    def ready(self) -> bool:
        """True once the worker consumes; fails with the log if it exited first."""
        self.check_alive()
        return " ready." in self.log()

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until(self.ready, timeout, 0.1, f"worker {self.name} to be ready")


def start_worker(
    env: Mapping[str, str],
    logs: Path,
    name: str | None = None,
    concurrency: int | None = 2,
    extra_args: Iterable[str] = (),
    wait: bool = True,
) -> LiveWorker:
    """A prefork worker consuming TASK_QUEUE of `env`; `concurrency=None` keeps the default."""
    name = name or f"w-{uuid.uuid4().hex[:6]}"
    # Probes and /metrics of a port of its own: workers side by side on one host never clash.
    env = {"WORKER_HTTP_PORT": str(free_port()), **env}
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker",
        "-P", "prefork", *(["-c", str(concurrency)] if concurrency is not None else []),
        "-Q", env["TASK_QUEUE"], "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        *extra_args,
    ]  # fmt: skip
    process = start_process(name, command, env, logs)
    worker = LiveWorker(process.name, process.proc, process.log_path)
    if wait:
        worker.wait_ready()
    return worker


def producer(broker_url: str, queue: str) -> Celery:
    """A Celery client configured as an API service's: JSON only, `queue` by default.

    Close it after use. It is never the current app, so shared tasks (of eager tests in the
    same process) keep resolving to the worker's app.
    """
    client = Celery("producer", broker=broker_url, set_as_current=False)
    client.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
    )
    return client


def stack_env(
    database_url: URL | str, redis_url: str, prefix: str = "test", **extra: str
) -> dict[str, str]:
    """Environment for live workers: this database and Redis, a queue and APP_NAME of their own."""
    tag = uuid.uuid4().hex[:8]
    if isinstance(database_url, URL):
        database_url = database_url.render_as_string(hide_password=False)
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_QUEUE": f"{prefix}-{tag}",
        "APP_NAME": f"{prefix}{tag}",
        **extra,
    }


def forget_queue(redis_url: str, queue: str) -> None:
    """Delete what `queue` leaves in Redis: its lists and kombu bindings, its messages delivered
    but unacknowledged (by a killed worker), its view buffer, quarantine and delivery counters."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for table in client.scan_iter(match="_kombu.binding*"):
            if not table.startswith(("_kombu.binding.", "_kombu.binding_permanent.")):
                continue  # _kombu.binding_deadlines is no binding table
            ours = [m for m in client.smembers(table) if str(m).split(_SEP)[-1] == queue]
            if ours:
                client.srem(table, *ours)
        for tag, entry in client.hscan_iter("unacked"):
            with contextlib.suppress(ValueError, IndexError):  # [message, exchange, routing key]
                if json.loads(entry)[2] == queue:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
        keys = [queue, *(f"{queue}{_SEP}{priority}" for priority in (3, 6, 9))]
        keys += client.scan_iter(match=f"*{{{queue}}}*")  # view buffer, quarantine
        keys += client.scan_iter(match=f"worker:deliveries:{queue}:*")
        client.delete(*keys)
    finally:
        client.close()


@dataclass
class LiveStack:
    """Live workers sharing one environment (database, Redis, queue), and their producers."""

    env: dict[str, str]
    logs: Path
    workers: list[LiveWorker] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.env["TASK_QUEUE"]

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    def start_worker(
        self,
        concurrency: int | None = 2,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> LiveWorker:
        """Another worker on the stack's queue, `env` added to the stack's environment."""
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        worker = start_worker(
            {**self.env, **(env or {})}, self.logs, name, concurrency, extra_args, wait=False
        )
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    @contextmanager
    def producer(self) -> Iterator[Celery]:
        client = producer(self.redis_url, self.queue)
        try:
            yield client
        finally:
            client.close()

    def send(self, client: Celery, name: str, *args: Any, **options: Any) -> str:
        """Publish task `name` by name with positional `args` on the stack's queue; its id."""
        return str(client.send_task(name, args=list(args), queue=self.queue, **options).id)

    def inspect(self, worker: LiveWorker, command: str) -> subprocess.CompletedProcess[str]:
        """`celery inspect <command>` of one worker, the way an operator runs it (named with -d,
        so it returns on that worker's reply)."""
        celery = ("-m", "celery", "-A", "worker.app")
        return run_python(self.env, *celery, "inspect", command, "-d", worker.node, timeout=60)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown of every worker, then forget the queue in Redis."""
        for worker in self.workers:
            worker.stop(timeout)
        self._forget_queue()

    def kill(self) -> None:
        """SIGKILL every worker (when only the outcome matters), then forget the queue."""
        for worker in self.workers:
            worker.kill()
        self._forget_queue()

    def _forget_queue(self) -> None:
        with contextlib.suppress(redis.ConnectionError):  # a fault test may have stopped Redis
            forget_queue(self.redis_url, self.queue)
