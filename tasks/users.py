"""Tasks that deactivate users, one at a time or all dormant ones in batches."""

from __future__ import annotations

import logging
import time
from functools import partial

from celery import shared_task

from worker.config import get_settings
from worker.contracts import DEACTIVATE_DORMANT_USERS, DEACTIVATE_USER
from worker.db import session_scope
from worker.domain import users
from worker.runtime.task import DatabaseTask

log = logging.getLogger(__name__)


@shared_task(name=DEACTIVATE_USER, base=DatabaseTask, bind=True)
def deactivate_user(self: DatabaseTask, user_id: int) -> bool:
    """Deactivate one user; True if this call changed them, False if they were inactive."""
    changed = bool(self.apply_once(partial(users.deactivate_user, user_id=user_id)))
    log.info("user %s %s", user_id, "deactivated" if changed else "was already inactive")
    return changed


# A run hands over to a fresh message well before the soft time limit, so a table of any size
# is done in several messages instead of being killed at the limit and redelivered.
_TIME_BUDGET_FRACTION = 0.5


@shared_task(name=DEACTIVATE_DORMANT_USERS, base=DatabaseTask, bind=True)
def deactivate_dormant_users(self: DatabaseTask, inactive_days: int = 365) -> int:
    """Deactivate every user inactive for `inactive_days`, one short transaction per batch.

    Resumable: users already deactivated are no longer candidates, so a run killed half way
    (or one handing over at its time budget) is finished by the next run. Returns the count.
    """
    settings = get_settings()
    budget = settings.task_soft_time_limit * _TIME_BUDGET_FRACTION
    with session_scope() as session:
        cutoff = users.dormant_cutoff(session, inactive_days)
        total = users.count_dormant(session, cutoff)
    log.info("deactivating %d dormant users (inactive since %s)", total, cutoff.isoformat())
    done, after_id, started = 0, 0, time.monotonic()
    while True:
        with session_scope() as session:
            batch = users.deactivate_dormant_batch(
                session, cutoff, after_id, settings.deactivate_batch_size
            )
        if batch.last_id is None:
            break
        done += batch.changed
        after_id = batch.last_id
        elapsed = time.monotonic() - started
        log.info("deactivated %d/%d dormant users (%.0f/s)", done, total, done / max(elapsed, 1e-9))
        if elapsed > budget and not self.request.called_directly:
            self.apply_async(kwargs={"inactive_days": inactive_days})
            log.info("time budget of %.0fs used; a new task takes the rest", budget)
            return done
    log.info("deactivated %d dormant users in %.1fs", done, time.monotonic() - started)
    return done
