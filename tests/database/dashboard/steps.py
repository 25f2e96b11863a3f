"""Given steps and checks the dashboard's route tests share."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker import ledger
from worker.contracts import RECORD_VIEW
from worker.errors import NotFound
from worker.models import TaskFailure
from worker.operations.dashboard.auth import CSRF_COOKIE

Published = list[tuple[str, list[Any], dict[str, Any], str]]
MakeClient = Callable[..., TestClient]


def dead_letter(
    session: Session,
    task_id: str,
    *args: object,
    name: str = RECORD_VIEW,
    error: Exception | None = None,
    minutes_ago: int = 0,
) -> None:
    ledger.record_failure(
        session,
        task_id=task_id,
        task_name=name,
        args=list(args),
        kwargs={},
        error=error or NotFound("post", 42),
    )
    if minutes_ago:
        session.execute(
            update(TaskFailure)
            .where(TaskFailure.task_id == task_id)
            .values(last_failed_at=func.now() - timedelta(minutes=minutes_ago))
        )
    session.flush()


def remaining(session: Session) -> set[str]:
    return set(session.scalars(select(TaskFailure.task_id)))


def csrf(client: TestClient) -> str:
    """The token of the client's cookie, as a page's forms carry it."""
    token = client.get("/api/csrf").json()["csrf_token"]
    assert client.cookies.get(CSRF_COOKIE) == token
    return str(token)
