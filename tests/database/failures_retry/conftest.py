"""`failures retry` against the test's transaction, with what it publishes recorded, not sent
(the same retry applied by a live worker: tests/live/test_failures_retry.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.orm import Session

from tests.database.failures_retry.steps import Sent, dead_letter
from worker.models import Post
from worker.runtime.app import app


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """What the CLI publishes, recorded instead of sent to Redis."""
    messages: list[Sent] = []

    def send_task(name: str, *, args: Any, kwargs: Any, task_id: str, queue: str) -> None:
        messages.append(Sent(name, args, kwargs, task_id, queue))

    monkeypatch.setattr(app, "send_task", send_task)
    return messages


@pytest.fixture
def dead_lettered_view(
    eager_tasks: Celery, db_session: Session, make_post: Callable[..., Post]
) -> Callable[[str], int]:
    """Dead-letter a view of a new post under `task_id` as a PoisonMessage; the post's id."""

    def make(task_id: str) -> int:
        post = make_post()
        dead_letter(db_session, task_id, args=(post.id,))
        return int(post.id)

    return make
