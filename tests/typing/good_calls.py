"""Client calls mypy must accept (checked by test_client_typing.py, never run)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from worker.producer.client import TaskClient, tasks
from worker.producer.enqueue import after_commit
from worker.producer.outbox import in_outbox


def calls(session: Session, client: TaskClient) -> list[str]:
    return [
        tasks.record_view(1),
        tasks.record_view(post_id=2, countdown=5),
        tasks.deactivate_user(3, task_id="deactivate-3", queue="worker"),
        tasks.deactivate_dormant_users(),
        tasks.deactivate_dormant_users(inactive_days=30, eta=datetime.now(UTC)),
        client.send("tasks.posts.record_view", [4]),
        after_commit(session).record_view(5),
        in_outbox(session).deactivate_user(6, countdown=1.5),
    ]
