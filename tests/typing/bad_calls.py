"""Client calls mypy must reject (checked by test_client_typing.py, never run)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from worker.producer.client import tasks
from worker.producer.enqueue import after_commit
from worker.producer.outbox import in_outbox


def calls(session: Session) -> int:
    tasks.record_view("x")  # line 13: a string id
    tasks.deactivate_user()  # line 14: missing user_id
    tasks.record_view(1, priority=9)  # line 15: unknown option
    tasks.record_view(1, countdown="soon")  # line 16: option of the wrong type
    tasks.deactivate_dormant_users(days=3)  # line 17: unknown argument
    after_commit(session).deactivate_user(None)  # line 18: None id
    in_outbox(session).record_view(1, 2)  # line 19: too many arguments
    return tasks.record_view(1)  # line 20: returns the task id, a str
