"""Exactly-once effects: a task's change and its id in `processed_tasks` commit together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from worker import ledger
from worker.db import session_scope
from worker.runtime import outcome

log = logging.getLogger(__name__)

R = TypeVar("R")


def apply_once(task_id: str | None, task_name: str, work: Callable[[Session], R]) -> R | None:
    """Run `work` in one session scope, recording `task_id` in the same transaction.

    A task id already recorded (a redelivered or re-sent message) does nothing: None. Without a
    task id (a direct call, not a message) there is nothing to de-duplicate.
    """
    with session_scope() as session:
        if task_id is not None and not ledger.claim(session, task_id, task_name):
            skipped_duplicate(task_name, task_id)
            return None
        return work(session)


def skipped_duplicate(task_name: str, task_id: str) -> None:
    """Log that `task_id` was already applied, and report the run as a duplicate."""
    log.info("%s[%s] was already applied; skipping duplicate", task_name, task_id)
    outcome.note(outcome.Outcome.DUPLICATE)
