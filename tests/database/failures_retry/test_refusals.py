"""Dead letters `failures retry` refuses and keeps: internal tasks, arguments that do not fit
exactly, arguments too large to have been kept."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.database.failures_retry.steps import Sent, dead_letter, remaining, run
from worker import ledger
from worker.contracts import (
    FLUSH_VIEW_COUNTS,
    OUTBOX_RELAY,
    PRUNE_PROCESSED_TASKS,
    RECORD_REFUSAL,
    RECORD_VIEW,
)
from worker.models import TaskFailure

REFUSAL_KWARGS = {"task_id": "t", "task_name": RECORD_VIEW, "error_class": "E", "reason": "r"}


def refused(sent: list[Sent], task_id: str) -> tuple[str, str]:
    """Retry `task_id`, which is refused: exit status 0, nothing sent; its line and the summary."""
    result = run(task_id)
    assert result.exit_code == 0, result.output
    assert sent == []
    first, summary = result.output.splitlines()
    return first, summary


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        (RECORD_REFUSAL, REFUSAL_KWARGS),
        (FLUSH_VIEW_COUNTS, {}),
        (OUTBOX_RELAY, {}),
        (PRUNE_PROCESSED_TASKS, {}),
        ("views.batch", {}),
        ("tasks.nope", {}),
    ],
)
def test_a_dead_letter_of_an_internal_task_is_refused_and_kept(
    db_session: Session, sent: list[Sent], name: str, kwargs: dict[str, Any]
) -> None:
    dead_letter(db_session, "internal", name=name, kwargs=kwargs)

    first, summary = refused(sent, "internal")

    assert first.startswith(f"refused internal: {name} is not a public task (only ")
    assert first.endswith("; kept")
    assert summary == "requeued 0, skipped 0 (already applied), refused 1 (1 not a public task)"
    assert remaining(db_session) == {"internal"}


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ("[42]", {}, "args is a string, not a JSON list"),
        ({"post_id": 42}, {}, "args is an object, not a JSON list"),
        ([], [42], "kwargs is a list, not a JSON object"),
        ([], "{}", "kwargs is a string, not a JSON object"),
        ([42], {"pad": "x"}, "pad: Extra inputs are not permitted"),
        (["42"], {}, "post_id: Input should be a valid integer"),
        ([42.0], {}, "post_id: Input should be a valid integer"),
        ([42, 43], {}, "takes at most 1 positional argument(s), got 2"),
        ([], {}, "post_id: Field required"),
    ],
)
def test_a_dead_letter_whose_arguments_do_not_fit_exactly_is_refused_and_kept(
    db_session: Session, sent: list[Sent], args: Any, kwargs: Any, reason: str
) -> None:
    dead_letter(db_session, "bad-args", args=args, kwargs=kwargs)

    first, summary = refused(sent, "bad-args")

    assert first.startswith("refused bad-args: ")
    assert reason in first
    assert summary == "requeued 0, skipped 0 (already applied), refused 1 (1 invalid arguments)"
    assert remaining(db_session) == {"bad-args"}


def test_a_refusal_whose_arguments_were_too_large_to_keep_is_never_sent(
    db_session: Session, sent: list[Sent]
) -> None:
    # Given a refused deactivate_dormant_users whose arguments were not kept: retrying it with
    # no arguments would run it with the default inactive_days instead of what was sent
    ledger.record_failure(
        db_session,
        task_id="too-large",
        task_name="tasks.users.deactivate_dormant_users",
        args=None,
        kwargs=None,
        error="message of 90000 bytes exceeds MAX_MESSAGE_BYTES",
        error_class="MessageTooLarge",
    )
    db_session.flush()

    # When an operator retries it
    first, _ = refused(sent, "too-large")

    # Then it is refused and kept, and nothing is sent
    assert first.startswith("refused too-large: ")
    assert remaining(db_session) == {"too-large"}
    row = db_session.get(TaskFailure, "too-large")
    assert row is not None
    assert row.args == ledger.ARGUMENTS_NOT_KEPT
