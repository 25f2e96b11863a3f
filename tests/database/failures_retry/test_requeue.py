"""A dead letter is requeued once, under one message id: never applied twice, whether its
original is delivered late, was applied already, or the publish is lost or refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from tasks.posts import record_view
from tests.database.failures_retry.steps import (
    SUMMARY_NOTHING_DONE,
    Sent,
    dead_letter,
    remaining,
    run,
    view_count,
)
from worker.config import get_settings
from worker.contracts import RECORD_VIEW
from worker.runtime.app import app


def test_a_valid_dead_letter_is_requeued_once(db_session: Session, sent: list[Sent]) -> None:
    dead_letter(db_session, "good", args=(42,))

    result = run("good")

    assert result.exit_code == 0, result.output
    ((message),) = sent
    assert message == Sent(RECORD_VIEW, [42], {}, message.task_id, get_settings().task_queue)
    assert result.output.splitlines() == [
        f"requeued good as {message.task_id}",
        "requeued 1, skipped 0 (already applied), refused 0",
    ]
    assert remaining(db_session) == set()


def test_a_late_delivery_of_the_original_is_not_applied_after_a_requeue(
    db_session: Session, sent: list[Sent], dead_lettered_view: Callable[[str], int]
) -> None:
    # Given a view falsely dead-lettered as a poison message while its delivery still runs
    post_id = dead_lettered_view("in-flight")

    # When it is requeued, and then both the original and the requeued message are delivered
    assert run("in-flight").exit_code == 0
    ((message),) = sent
    record_view.apply_async(args=[post_id], task_id="in-flight")
    record_view.apply_async(args=message.args, task_id=message.task_id)

    # Then the view is counted once
    assert view_count(db_session, post_id) == 1


def test_a_dead_letter_whose_task_was_applied_is_skipped_and_deleted(
    db_session: Session, sent: list[Sent], dead_lettered_view: Callable[[str], int]
) -> None:
    # Given a view dead-lettered as a poison message whose original delivery then succeeded
    post_id = dead_lettered_view("applied")
    record_view.apply_async(args=[post_id], task_id="applied")

    result = run("applied")

    # Then nothing is published, the dead letter is resolved, and the view counted once
    assert result.exit_code == 0, result.output
    assert sent == []
    assert result.output.splitlines() == [
        "skipped applied: already applied (task id applied is in processed_tasks); "
        "dead letter deleted",
        "requeued 0, skipped 1 (already applied), refused 0",
    ]
    assert remaining(db_session) == set()
    assert view_count(db_session, post_id) == 1


def test_a_requeue_whose_publish_was_lost_is_published_again_under_the_same_id(
    db_session: Session, sent: list[Sent], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a publish that reached Redis but whose confirmation was lost
    dead_letter(db_session, "lost", args=(42,))
    recording = app.send_task

    def send_then_fail(name: str, **options: Any) -> None:
        recording(name, **options)
        raise OperationalError("connection reset by peer")

    monkeypatch.setattr(app, "send_task", send_then_fail)
    first = run("lost")
    monkeypatch.setattr(app, "send_task", recording)
    second = run("lost")

    # Then the first run fails and keeps the dead letter, and both runs sent one message id
    assert first.exit_code == 1
    assert first.output.splitlines() == [
        "stopped: could not publish lost: OperationalError: connection reset by peer; "
        "its dead letter is kept",
        SUMMARY_NOTHING_DONE,
    ]
    assert second.exit_code == 0, second.output
    assert len(sent) == 2
    assert len({message.task_id for message in sent}) == 1
    assert remaining(db_session) == set()


def test_retry_all_stops_when_the_broker_is_unreachable(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_letter(db_session, "first", args=(1,))
    dead_letter(db_session, "second", args=(2,))
    attempts: list[str] = []

    def unreachable(name: str, *, task_id: str, **options: Any) -> None:
        attempts.append(task_id)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", unreachable)

    result = run("--all")

    assert result.exit_code == 1
    assert len(attempts) == 1  # the rest are not tried
    assert "Connection refused" in result.output
    assert result.output.splitlines()[-1] == SUMMARY_NOTHING_DONE
    assert remaining(db_session) == {"first", "second"}
