"""The example for real: uvicorn serving blog_api, and a prefork worker with embedded beat.

Started with the worker package's live-worker helpers (`worker.development.live`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from worker.development.live import (
    LiveWorker,
    forget_queue,
    stack_env,
    start_process,
    start_worker,
    wait_until,
)
from worker.development.processes import free_port

EXAMPLE_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    """The running example: its base URL and a database engine for Then steps."""

    url: str
    db: Engine
    worker: LiveWorker


@contextmanager
def running_api(env: Mapping[str, str], logs: Path) -> Iterator[str]:
    """uvicorn serving blog_api with `env` on a free port: its base URL, once it answers."""
    port = free_port()
    uvicorn = ["uvicorn", "blog_api:app", "--app-dir", str(EXAMPLE_DIR), "--port", str(port)]
    api = start_process("api", [sys.executable, "-m", *uvicorn, "--host", "127.0.0.1"], env, logs)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        api.check_alive()
        try:
            return httpx2.get(f"{url}/openapi.json", timeout=2).status_code == 200
        except httpx2.TransportError:
            return False

    try:
        wait_until(up, 90, 0.1, "uvicorn to answer")
        yield url
    finally:
        api.stop()


@contextmanager
def running_service(database_url: URL, redis_url: str, logs: Path) -> Iterator[Service]:
    """uvicorn, and `celery worker -P prefork -c 2 --beat`, on this database and a new queue."""
    env = stack_env(database_url, redis_url, prefix="e2e")
    schedule = ["--beat", "-s", str(logs / "beat-schedule")]
    worker = start_worker(env, logs, "e2e-worker", concurrency=2, extra_args=schedule, wait=False)
    db = create_engine(database_url, poolclass=NullPool)
    try:
        with running_api(env, logs) as url:  # the worker starts meanwhile
            worker.wait_ready()
            yield Service(url, db, worker)
    finally:
        worker.stop()
        db.dispose()
        forget_queue(redis_url, env["TASK_QUEUE"])
