"""What the `failures retry` tests share: the dead letters they start from, the command, and
what it sent."""

from __future__ import annotations

from typing import Any, NamedTuple

from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.contracts import RECORD_VIEW
from worker.models import Post, TaskFailure
from worker.operations.cli import main

SUMMARY_NOTHING_DONE = "requeued 0, skipped 0 (already applied), refused 0"


class Sent(NamedTuple):
    name: str
    args: Any
    kwargs: Any
    task_id: str
    queue: str


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
