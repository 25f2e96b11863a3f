"""Fixtures: the API on the plugin's rolled-back database, and the whole service for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from blog_api import app
from celery import Celery
from fastapi.testclient import TestClient
from live_service import Service, running_service
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from worker.config import get_settings


@pytest.fixture
def client(db_session: Session, eager_tasks: Celery) -> Iterator[TestClient]:
    """Requests share the test's database connection; enqueued tasks run before they return."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def service(committed_db_url: URL, tmp_path: Path) -> Iterator[Service]:
    """The example for real on a fresh database, with a queue of this test's own on the
    configured Redis."""
    with running_service(
        committed_db_url, get_settings().redis_url.get_secret_value(), tmp_path
    ) as running:
        yield running
