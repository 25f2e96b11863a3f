"""The dashboard on the test's transaction and a Redis queue of its own, through FastAPI's
TestClient: the fixtures the route tests share (their steps: `steps.py`).

A live worker and a real browser: tests/live/test_dashboard_browser.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from tests.database.dashboard.steps import MakeClient, Published
from worker.config import Settings
from worker.development.live import forget_queue
from worker.operations.dashboard.app import create_app


@pytest.fixture
def queue(live_redis_url: str) -> Iterator[str]:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    yield name
    forget_queue(live_redis_url, name)


@pytest.fixture
def published() -> Published:
    return []


@pytest.fixture
def make_client(
    db_session: Session, live_redis_url: str, queue: str, published: Published
) -> Iterator[MakeClient]:
    """A TestClient of a dashboard on the test's transaction and queue, recording what it
    requeues; keyword arguments go to Settings, `read_only` and `relay_client` to the app."""
    clients: list[TestClient] = []

    def make(read_only: bool = False, relay_client: Any = None, **settings: Any) -> TestClient:
        current = Settings(redis_url=SecretStr(live_redis_url), task_queue=queue, **settings)
        app = create_app(
            current,
            read_only=read_only,
            publish=lambda *message: published.append(message),
            relay_client=relay_client,
        )
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.app.state.dashboard.broker.close()  # type: ignore[attr-defined]
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()
