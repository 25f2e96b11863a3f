"""`python -m worker failures retry` never applies a task twice: skips, refusals, one message id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from celery import Celery
from click.testing import CliRunner, Result
from kombu.exceptions import OperationalError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.posts import record_view
from worker import ledger
from worker.config import get_settings
from worker.contracts import (
    DEACTIVATE_USER,
    FLUSH_VIEW_COUNTS,
    OUTBOX_RELAY,
    PRUNE_PROCESSED_TASKS,
    RECORD_REFUSAL,
    RECORD_VIEW,
)
from worker.models import Post, TaskFailure
from worker.operations.cli import main
from worker.runtime.app import app

SUMMARY_NOTHING_DONE = "requeued 0, skipped 0 (already applied), refused 0"


class Sent(NamedTuple):
    name: str
    args: Any
    kwargs: Any
    task_id: str
    queue: str


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """What the CLI publishes, recorded instead of sent to Redis."""
    messages: list[Sent] = []

    def send_task(name: str, *, args: Any, kwargs: Any, task_id: str, queue: str) -> None:
        messages.append(Sent(name, args, kwargs, task_id, queue))

    monkeypatch.setattr(app, "send_task", send_task)
    return messages


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["failures", "retry", *args])


def dead_letter(
    session: Session, task_id: str, name: str = RECORD_VIEW, args: Any = (), kwargs: Any = None
) -> None:
    """A dead letter with exactly these JSON args and kwargs (a list by default)."""
    session.add(
        TaskFailure(
            task_id=task_id,
            task_name=name,
            args=list(args) if isinstance(args, tuple) else args,
            kwargs={} if kwargs is None else kwargs,
            error_class="PoisonMessage",
            error_message="delivered 3 times without finishing",
        )
    )
    session.flush()


def remaining(session: Session) -> set[str]:
    return set(session.scalars(select(TaskFailure.task_id)))


def view_count(session: Session, post_id: int) -> int | None:
    return session.scalar(select(Post.view_count).where(Post.id == post_id))


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


REFUSAL_KWARGS = {"task_id": "t", "task_name": RECORD_VIEW, "error_class": "E", "reason": "r"}


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

    result = run("internal")

    assert result.exit_code == 0, result.output
    assert sent == []
    first, summary = result.output.splitlines()
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

    result = run("bad-args")

    assert result.exit_code == 0, result.output
    assert sent == []
    first, summary = result.output.splitlines()
    assert first.startswith("refused bad-args: ")
    assert reason in first
    assert summary == "requeued 0, skipped 0 (already applied), refused 1 (1 invalid arguments)"
    assert remaining(db_session) == {"bad-args"}


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
    result = run("too-large")

    # Then it is refused and kept, and nothing is sent
    assert result.exit_code == 0, result.output
    assert "refused" in result.output
    assert sent == []
    assert remaining(db_session) == {"too-large"}
    row = db_session.get(TaskFailure, "too-large")
    assert row is not None
    assert row.args == ledger.ARGUMENTS_NOT_KEPT
