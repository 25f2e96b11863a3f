"""`python -m worker failures list|show|purge`, and a retry a live worker applies.

The rules of `failures retry` are tested in test_failures_retry.py.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from tests.livecelery import ROOT, LiveStack, wait_until
from tests.reliability.helpers import add_posts, failure, processed_ids, views
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


@pytest.mark.integration
def test_retry_requeues_as_a_new_task_that_a_live_worker_applies(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a view of a post that did not exist yet, dead-lettered by a live worker
    live_stack.start_worker(concurrency=1)
    with live_stack.producer() as client:
        live_stack.send(client, "tasks.posts.record_view", 777_777, task_id="too-early")
    wait_until(lambda: failure(live_db, "too-early"), 60, what="the dead letter")
    # And the post that now exists
    (post,) = add_posts(live_db, 1)
    with live_db.begin() as connection:
        connection.execute(text("UPDATE posts SET id = 777777 WHERE id = :id"), {"id": post})

    # When an operator requeues it with the CLI, in the worker's environment but as the owner
    # (the runtime role the worker logs in as may not read or delete dead letters)
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker", "failures", *args]
        owner = live_db.url.render_as_string(hide_password=False)
        env = {**live_stack.env, "DATABASE_URL": owner}
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    listed = cli("list")
    retried = cli("retry", "too-early")

    # Then it is published under a new id and applied, and the dead letter is gone
    assert "too-early" in listed.stdout
    assert retried.returncode == 0, retried.stderr
    requeued, summary = retried.stdout.splitlines()
    new_id = requeued.split()[-1]
    assert requeued == f"requeued too-early as {new_id}"
    assert summary == "requeued 1, skipped 0 (already applied), refused 0"
    wait_until(lambda: views(live_db, 777_777) == 1, 60, what="the requeued view")
    # The original id is claimed too, so a late delivery of it would be skipped
    assert processed_ids(live_db) == {"too-early", new_id}
    assert failure(live_db, "too-early") is None
    assert cli("retry", "too-early").returncode == 1
