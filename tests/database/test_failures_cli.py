"""`python -m worker failures list|show|purge`.

The rules of `failures retry` are tested in failures_retry/; a retry a live worker
applies in tests/live/test_failures_retry.py.
"""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner, Result
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker import ledger
from worker.errors import NotFound
from worker.models import TaskFailure
from worker.operations.cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["failures", *args])


def dead_letter(session: Session, task_id: str, *args: object, name: str = "") -> None:
    ledger.record_failure(
        session,
        task_id=task_id,
        task_name=name or "tasks.posts.record_view",
        args=list(args),
        kwargs={},
        error=NotFound("post", 42),
    )
    session.flush()


def remaining(session: Session) -> set[str]:
    return set(session.scalars(select(TaskFailure.task_id)))


def test_list_shows_the_most_recent_dead_letters(db_session: Session) -> None:
    assert run("list").output == "no dead letters\n"
    dead_letter(db_session, "first", 42)
    dead_letter(db_session, "second", 43, name="tasks.users.deactivate_user")

    result = run("list")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["TASK", "ID", "TASK", "ERROR"]
    assert {line.split()[0] for line in lines[1:3]} == {"first", "second"}
    assert "tasks.users.deactivate_user" in result.output
    assert lines[-1] == "2 of 2 dead letters shown"
    only_users = run("list", "--task", "tasks.users.deactivate_user").output
    assert "second" in only_users
    assert "first" not in only_users


def test_show_prints_every_field(db_session: Session) -> None:
    dead_letter(db_session, "shown", 42)

    result = run("show", "shown")

    assert result.exit_code == 0, result.output
    assert "task:         tasks.posts.record_view" in result.output
    assert "args:         [42]" in result.output
    assert "error:        NotFound: post 42 does not exist" in result.output
    assert "attempts:     1" in result.output
    missing = run("show", "nope")
    assert missing.exit_code == 1
    assert "no dead letter with task id 'nope'" in missing.output


def test_purge_one_old_or_all(db_session: Session) -> None:
    for task_id in ("a", "b", "old"):
        dead_letter(db_session, task_id, 1)
    db_session.execute(
        update(TaskFailure)
        .where(TaskFailure.task_id == "old")
        .values(last_failed_at=func.now() - timedelta(days=40))
    )

    assert run("purge").exit_code == 2  # nothing chosen: a usage error, nothing deleted
    assert run("purge", "a", "--all").exit_code == 2
    assert remaining(db_session) == {"a", "b", "old"}

    assert run("purge", "--older-than", "30").output == "purged 1 dead letter\n"
    assert remaining(db_session) == {"a", "b"}
    assert run("purge", "a").output == "purged 1 dead letter\n"
    assert run("purge", "a").exit_code == 1
    assert run("purge", "--all").output == "purged 1 dead letter\n"
    assert remaining(db_session) == set()
