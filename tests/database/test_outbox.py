"""Transactional outbox: rows written with the caller's change, or not at all.

Relaying them in order, never lost: test_outbox_relay.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.database.producer import add_post, all_rows
from worker.contracts import DEACTIVATE_USER, RECORD_VIEW, InvalidTaskArguments
from worker.db import session_scope
from worker.models import User
from worker.producer.outbox import add as add_to_outbox
from worker.producer.outbox import in_outbox


class RequestFailed(Exception):
    pass


def test_add_writes_a_row_in_the_callers_transaction(db_session: Session) -> None:
    with session_scope() as session:
        user_id, post_id = add_post(session)
        first = in_outbox(session).deactivate_user(user_id, countdown=30)
        second = add_to_outbox(session, RECORD_VIEW, [post_id], queue="views", task_id="view-1")

    rows = all_rows(db_session)
    assert [(r.task_id, r.task_name, r.args, r.kwargs) for r in rows] == [
        (first, DEACTIVATE_USER, [], {"user_id": user_id}),
        ("view-1", RECORD_VIEW, [], {"post_id": post_id}),
    ]
    assert second == "view-1"
    assert rows[1].options == {"queue": "views"}
    # countdown is fixed to an absolute eta when the row is written
    assert datetime.fromisoformat(rows[0].options["eta"]) > rows[0].created_at
    assert [(r.sent_at, r.attempts, r.last_error) for r in rows] == [(None, 0, None)] * 2


def test_rolled_back_change_leaves_no_row(db_session: Session) -> None:
    def request() -> None:
        with session_scope() as session:
            user_id, _ = add_post(session)
            in_outbox(session).deactivate_user(user_id)
            raise RequestFailed

    with pytest.raises(RequestFailed):
        request()
    assert all_rows(db_session) == []
    assert db_session.scalar(select(func.count()).select_from(User)) == 0


def test_same_task_id_twice_is_one_row(db_session: Session) -> None:
    for _ in range(2):
        with session_scope() as session:
            in_outbox(session).deactivate_user(3, task_id="deactivate-3")
    assert [r.task_id for r in all_rows(db_session)] == ["deactivate-3"]


def test_bad_call_is_refused_before_any_row_is_written(db_session: Session) -> None:
    with session_scope() as session:
        with pytest.raises(InvalidTaskArguments, match="post_id"):
            in_outbox(session).record_view("7")
        with pytest.raises(InvalidTaskArguments, match="unknown task name"):
            add_to_outbox(session, "tasks.nope")
    assert all_rows(db_session) == []
