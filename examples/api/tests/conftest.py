"""Fixtures: the API on the plugin's rolled-back database, and the whole service for real."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import redis
from blog_api import app
from celery import Celery
from fastapi.testclient import TestClient
from live_service import EXAMPLE_DIR, Service, start, wait_until
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from worker.config import get_settings
from worker.development.services import free_port


@pytest.fixture
def client(db_session: Session, eager_tasks: Celery) -> Iterator[TestClient]:
    """Requests share the test's database connection; enqueued tasks run before they return."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def service(committed_db_url: URL, tmp_path: Path) -> Iterator[Service]:
    """uvicorn serving the example, and `celery worker -P prefork -c 2 --beat`.

    Both on a fresh database, and a queue of this test's own on the configured Redis.
    """
    tag = uuid.uuid4().hex[:8]
    redis_url = get_settings().redis_url.get_secret_value()
    env = {
        **os.environ,
        "DATABASE_URL": committed_db_url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "TASK_QUEUE": f"example-e2e-{tag}",
        "APP_NAME": f"e2e{tag}",
    }
    port = free_port()
    worker = start(
        "worker",
        [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "-P", "prefork", "-c", "2", "--beat", "-s", str(tmp_path / "beat-schedule"),
            "-n", f"e2e-{tag}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "INFO",
        ],
        env,
        tmp_path,
    )  # fmt: skip
    api = start(
        "api",
        [
            sys.executable, "-m", "uvicorn", "blog_api:app", "--app-dir", str(EXAMPLE_DIR),
            "--host", "127.0.0.1", "--port", str(port),
        ],
        env,
        tmp_path,
    )  # fmt: skip
    engine = create_engine(committed_db_url, poolclass=NullPool)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            worker.check_alive()
            api.check_alive()
            try:
                answered = httpx2.get(f"{url}/openapi.json", timeout=2).status_code == 200
            except httpx2.TransportError:
                return False
            return answered and " ready." in worker.log()

        wait_until(up, timeout=90, what="uvicorn and the worker to be ready")
        yield Service(url, engine, worker, api)
    finally:
        api.stop()
        worker.stop()
        engine.dispose()
        client = redis.Redis.from_url(redis_url)
        client.delete(env["TASK_QUEUE"])
        client.close()
