"""The benchmark's own services: a private Redis, throwaway databases, and live workers."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from worker.config import get_settings
from worker.contracts import PUBLISHED_AT_HEADER
from worker.development.databases import create_database, drop_database, migrate
from worker.development.live import LiveStack, LiveWorker, producer, stack_env, wait_until
from worker.development.servers import RedisServer

NOOP_TASKS = "benchmarks.noop_tasks"
# Used only when redis-server is not installed: a database index of the configured Redis.
FALLBACK_REDIS_DB = 13


@dataclass
class Databases:
    """Throwaway databases on the configured PostgreSQL server, all dropped at the end."""

    admin_url: URL
    tag: str
    names: list[str] = field(default_factory=list)

    def create(self, purpose: str, template: str | None = None) -> URL:
        name = f"bench_{self.tag}_{purpose}"
        drop_database(self.admin_url, name)
        url = create_database(self.admin_url, name, template=template)
        if name not in self.names:
            self.names.append(name)
        return url

    def migrated(self, purpose: str) -> URL:
        url = self.create(purpose)
        migrate(url)
        return url

    def drop(self, url: URL) -> None:
        assert url.database is not None
        drop_database(self.admin_url, url.database)

    def drop_all(self) -> None:
        for name in self.names:
            with contextlib.suppress(Exception):
                drop_database(self.admin_url, name)


def engine(url: URL, **options: Any) -> Engine:
    """A small engine for the benchmark's own Given and Then steps."""
    return create_engine(url, poolclass=NullPool, **options)


def checkpoint(url: URL) -> None:
    """Start the next timing from a clean slate of dirty buffers, where the role may do so."""
    admin = engine(url, isolation_level="AUTOCOMMIT")
    with contextlib.suppress(Exception), admin.connect() as connection:
        connection.execute(text("CHECKPOINT"))
    admin.dispose()


@contextmanager
def private_redis(tmp: Path) -> Iterator[str]:
    """A redis-server of the benchmark's own, or a spare database index of the configured one."""
    if shutil.which("redis-server") is None:
        base = get_settings().redis_url.get_secret_value().rsplit("/", 1)[0]
        yield f"{base}/{FALLBACK_REDIS_DB}"
        return
    server = RedisServer(tmp / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class BenchWorker:
    """One live worker on a queue of its own, plus what the benchmark needs to steer it."""

    stack: LiveStack
    worker: LiveWorker
    producer: Celery
    redis: redis.Redis[Any]

    @property
    def queue(self) -> str:
        return self.stack.queue

    @property
    def node(self) -> str:
        return self.worker.node

    def pause(self) -> None:
        """Stop consuming (running tasks finish), so a queue can be filled before a timing."""
        self._steer(self.producer.control.cancel_consumer, consuming=False)

    def resume(self) -> None:
        self._steer(self.producer.control.add_consumer, consuming=True)

    def _steer(self, command: Callable[..., Any], consuming: bool) -> None:
        # The worker answers a remote-control command before it runs it, and an add_consumer
        # right behind a cancel can come to nothing: ask until its active queues show it.
        def done() -> bool:
            if not command(self.queue, destination=[self.node], reply=True, timeout=10):
                raise RuntimeError(f"worker {self.node} did not answer {command.__name__}")
            inspect = self.producer.control.inspect([self.node], timeout=10)
            active = inspect.active_queues() or {}
            return (self.queue in {q["name"] for q in active.get(self.node, [])}) == consuming

        state = "consuming" if consuming else "paused"
        wait_until(done, 60, 0.2, f"worker {self.node} {state} on {self.queue}")

    def drained(self) -> bool:
        """Nothing waiting and nothing delivered but unacknowledged (acks are late)."""
        return self.redis.llen(self.queue) == 0 and self.redis.hlen("unacked") == 0

    def wait_drained(self, timeout: float, interval: float = 0.01) -> None:
        wait_until(self.drained, timeout, interval, f"queue {self.queue} drained")

    def preload(self, task_name: str, args: Iterable[list[Any]]) -> int:
        """Push one message per argument list straight into the queue, many per round trip.

        The message format is taken from a real `send_task`, so it stays what Celery sends;
        only the task id changes from one message to the next.
        """
        template = self._template(task_name)
        count = 0
        pipe = self.redis.pipeline(transaction=False)
        for arguments in args:
            task_id = str(uuid.uuid4())
            template["headers"].update(id=task_id, root_id=task_id, argsrepr=repr(arguments))
            # As the typed client stamps it: the worker measures each run's queue wait.
            template["headers"][PUBLISHED_AT_HEADER] = time.time()
            template["properties"]["correlation_id"] = task_id
            template["properties"]["delivery_tag"] = str(uuid.uuid4())
            body = json.dumps([arguments, {}, _NO_CALLBACKS]).encode()
            template["body"] = base64.b64encode(body).decode()
            pipe.lpush(self.queue, json.dumps(template))
            count += 1
            if count % 2000 == 0:
                pipe.execute()
        pipe.execute()
        return count

    def _template(self, task_name: str) -> dict[str, Any]:
        scratch = f"{self.queue}.template"
        self.producer.send_task(task_name, args=[1], queue=scratch, routing_key=scratch)
        raw = self.redis.rpop(scratch)
        self.redis.delete(scratch)
        if raw is None:
            raise RuntimeError("could not capture a message template")
        message: dict[str, Any] = json.loads(raw)
        message["properties"]["delivery_info"]["routing_key"] = self.queue
        return message

    def child_rss_kib(self) -> dict[int, int]:
        """Resident set size of each pool child, in KiB."""
        sizes = {}
        for pid in self.worker.children():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes[pid] = int(line.split()[1])
        return sizes


_NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass
class Bench:
    """Everything one benchmark run owns; `close()` stops and drops all of it."""

    tmp: Path
    redis_url: str
    databases: Databases
    workers: list[BenchWorker] = field(default_factory=list)

    def start_worker(self, database_url: URL, concurrency: int | None, **env: str) -> BenchWorker:
        """A live worker; `concurrency=None` keeps the shipped default (WORKER_CONCURRENCY)."""
        env = {"EXTRA_TASK_MODULES": NOOP_TASKS, **env}
        stack = LiveStack(stack_env(database_url, self.redis_url, "bench", **env), self.tmp)
        worker = stack.start_worker(concurrency=concurrency)
        client: redis.Redis[Any] = redis.Redis.from_url(self.redis_url)
        bench_worker = BenchWorker(stack, worker, producer(self.redis_url, stack.queue), client)
        self.workers.append(bench_worker)
        return bench_worker

    def close(self) -> None:
        for bench_worker in self.workers:
            bench_worker.stack.stop()  # and forget its queue, view buffer included
            bench_worker.producer.close()
            bench_worker.redis.close()
        self.databases.drop_all()


@contextmanager
def bench(tmp: Path) -> Iterator[Bench]:
    """Private Redis, a database tag and a worker list for one benchmark run."""
    tmp.mkdir(parents=True, exist_ok=True)
    databases = Databases(get_settings().sqlalchemy_url, uuid.uuid4().hex[:8])
    with private_redis(tmp) as redis_url:
        run = Bench(tmp, redis_url, databases)
        try:
            yield run
        finally:
            run.close()


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took on the monotonic clock."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
