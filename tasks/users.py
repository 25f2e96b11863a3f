"""Tasks that deactivate users, one at a time or all dormant ones in batches."""

from __future__ import annotations

import logging
import time
from functools import partial

from celery import shared_task

from tasks.base import DatabaseTask
from worker import users
from worker.config import get_settings
from worker.contracts import DEACTIVATE_DORMANT_USERS, DEACTIVATE_USER
from worker.db import session_scope

log = logging.getLogger(__name__)


@shared_task(name=DEACTIVATE_USER, base=DatabaseTask, bind=True)
def deactivate_user(self: DatabaseTask, user_id: int) -> bool:
    """Deactivate one user; True if this call changed them, False if they were inactive."""
    changed = bool(self.apply_once(partial(users.deactivate_user, user_id=user_id)))
    log.info("user %s %s", user_id, "deactivated" if changed else "was already inactive")
    return changed


@shared_task(name=DEACTIVATE_DORMANT_USERS, base=DatabaseTask, bind=True)
def deactivate_dormant_users(self: DatabaseTask, inactive_days: int = 365) -> int:
    """Deactivate every user inactive for `inactive_days`, one short transaction per batch.

    Safe to re-run after a crash: users already deactivated are no longer candidates.
    """
    batch_size = get_settings().deactivate_batch_size
    with session_scope() as session:
        cutoff = users.dormant_cutoff(session, inactive_days)
        total = users.count_dormant(session, cutoff)
    log.info("deactivating %d dormant users (inactive since %s)", total, cutoff.isoformat())
    done, after_id, started = 0, 0, time.monotonic()
    while True:
        with session_scope() as session:
            batch = users.deactivate_dormant_batch(session, cutoff, after_id, batch_size)
        if batch.last_id is None:
            break
        done += batch.changed
        after_id = batch.last_id
        rate = done / max(time.monotonic() - started, 1e-9)
        log.info("deactivated %d/%d dormant users (%.0f/s)", done, total, rate)
    log.info("deactivated %d dormant users in %.1fs", done, time.monotonic() - started)
    return done
