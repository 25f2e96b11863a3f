"""Tasks that count post views."""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task

from tasks.base import DatabaseTask
from worker import posts
from worker.contracts import RECORD_VIEW

log = logging.getLogger(__name__)


@shared_task(name=RECORD_VIEW, base=DatabaseTask, bind=True)
def record_view(self: DatabaseTask, post_id: int) -> int | None:
    """Count one view of a post; returns the new count (None for a duplicate delivery)."""
    count = self.apply_once(partial(posts.record_view, post_id=post_id))
    log.debug("post %s now has %s views", post_id, count)
    return count
