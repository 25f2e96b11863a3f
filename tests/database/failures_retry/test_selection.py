"""Which dead letters a run retries: given task ids or --all (of one task name), each reported
with the counts."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from tests.database.failures_retry.steps import Sent, dead_letter, remaining, run
from worker import ledger
from worker.contracts import DEACTIVATE_USER, FLUSH_VIEW_COUNTS, RECORD_VIEW


def test_retry_all_over_a_mix_reports_each_row_and_the_counts(
    db_session: Session, sent: list[Sent]
) -> None:
    # Given two good dead letters, one already applied, one internal, one with bad arguments
    dead_letter(db_session, "view", args=(1,))
    dead_letter(db_session, "user", name=DEACTIVATE_USER, kwargs={"user_id": 2})
    dead_letter(db_session, "applied", args=(3,))
    ledger.claim(db_session, "applied", RECORD_VIEW)
    dead_letter(db_session, "internal", name=FLUSH_VIEW_COUNTS)
    dead_letter(db_session, "bad", kwargs=[4])

    result = run("--all")

    # Then the good ones are published once each and the rest are reported, with exit status 0
    assert result.exit_code == 0, result.output
    assert sorted((m.name, m.args, m.kwargs) for m in sent) == [
        (RECORD_VIEW, [1], {}),
        (DEACTIVATE_USER, [], {"user_id": 2}),
    ]
    lines = result.output.splitlines()
    assert len(lines) == 6
    assert {line.split()[1].rstrip(":") for line in lines[:5]} == {
        "view",
        "user",
        "applied",
        "internal",
        "bad",
    }
    assert lines[-1] == (
        "requeued 2, skipped 1 (already applied), "
        "refused 2 (1 invalid arguments, 1 not a public task)"
    )
    assert remaining(db_session) == {"internal", "bad"}

    # And a second run publishes nothing more
    again = run("--all")
    assert again.exit_code == 0
    assert len(sent) == 2
    assert again.output.splitlines()[-1] == (
        "requeued 0, skipped 0 (already applied), "
        "refused 2 (1 invalid arguments, 1 not a public task)"
    )


def test_retry_all_of_one_task_name_leaves_the_others(
    db_session: Session, sent: list[Sent]
) -> None:
    dead_letter(db_session, "view", args=(1,))
    dead_letter(db_session, "user", name=DEACTIVATE_USER, args=(2,))

    result = run("--all", "--task", DEACTIVATE_USER)

    assert result.exit_code == 0, result.output
    assert [(m.name, m.args) for m in sent] == [(DEACTIVATE_USER, [2])]
    assert remaining(db_session) == {"view"}


def test_an_unknown_task_id_fails_but_the_others_given_are_retried(
    db_session: Session, sent: list[Sent]
) -> None:
    dead_letter(db_session, "known", args=(1,))

    result = run("nope", "known")

    assert result.exit_code == 1
    assert [m.args for m in sent] == [[1]]
    assert "not found: no dead letter with task id 'nope'" in result.output
    assert result.output.splitlines()[-1] == (
        "requeued 1, skipped 0 (already applied), refused 0, not found 1"
    )
    assert remaining(db_session) == set()


@pytest.mark.parametrize(
    "args", [(), ("a", "--all"), ("a", "--task", RECORD_VIEW)], ids=["none", "both", "task"]
)
def test_retry_needs_task_ids_or_all(sent: list[Sent], args: tuple[str, ...]) -> None:
    result = run(*args)

    assert result.exit_code == 2
    assert sent == []
