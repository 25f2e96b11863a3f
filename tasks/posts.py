"""Tasks that count post views."""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from redis import Redis

from worker import ledger
from worker.config import get_settings
from worker.contracts import FLUSH_VIEW_COUNTS, RECORD_VIEW
from worker.db import session_scope
from worker.domain import posts
from worker.producer import viewbuffer
from worker.runtime import exactly_once
from worker.runtime.task import DatabaseTask

log = logging.getLogger(__name__)


@shared_task(name=RECORD_VIEW, base=DatabaseTask, bind=True)
def record_view(self: DatabaseTask, post_id: int) -> int | None:
    """Count one view of a post; returns the new count (None for a duplicate delivery)."""
    task_id = self.request.id
    if task_id is None:  # called directly, not as a task: nothing to de-duplicate
        count: int | None = self.apply_once(partial(posts.record_view, post_id=post_id))
    else:
        # The ledger claim and the UPDATE share one statement: one round trip per view.
        with session_scope() as session:
            count = posts.record_view_once(session, post_id, task_id, self.name)
        if count is None:
            exactly_once.skipped_duplicate(self.name, task_id)
    log.debug("post %s now has %s views", post_id, count)
    return count


@shared_task(name=FLUSH_VIEW_COUNTS, base=DatabaseTask, bind=True)
def flush_view_counts(self: DatabaseTask) -> int:
    """Add the views buffered in Redis to the posts, each batch exactly once; return views added.

    Beat runs it every VIEW_FLUSH_INTERVAL seconds. Batches a crashed flush left behind are
    applied (or, if their transaction committed, just cleaned up) before the new one. A batch
    Redis brings back after it was applied (a restore, a failover) is dropped with a warning.
    """
    settings = get_settings()
    redis = viewbuffer.get_redis()
    keys = viewbuffer.buffer_keys(settings.task_queue)
    pending_id = viewbuffer.pending_batch_id(redis, keys)
    # A pending hash's id reaches the ledger only after the hash is moved aside: finding it
    # there already means Redis went back to before that move (a snapshot restore, a failover
    # to a lagging replica, an fsync window lost). Checked before the move, while no other
    # flusher can have claimed it, so a concurrent flush is never taken for a restore.
    restored = pending_id is not None and _applied(pending_id)
    moved = viewbuffer.move_aside(redis, keys, pending_id)
    added = 0
    for batch_id in moved.batch_ids:
        was_restored = restored and batch_id == moved.batch_id
        added += _apply_batch(redis, keys, batch_id, settings.view_flush_chunk_size, was_restored)
    return added


def _applied(batch_id: str) -> bool:
    with session_scope() as session:
        return ledger.is_claimed(session, batch_id)


def _apply_batch(
    redis: Redis, keys: viewbuffer.BufferKeys, batch_id: str, chunk_size: int, restored: bool
) -> int:
    counts = viewbuffer.read_batch(redis, keys, batch_id)
    if counts is None:
        _report_vanished(batch_id)
        viewbuffer.forget_batch(redis, keys, batch_id)  # unregistered: reported once
        return 0
    added = None
    if counts:
        # The batch id is claimed first, so a second flusher of the same batch waits on it
        # before touching any post, then finds it applied.
        with session_scope() as session:
            if ledger.claim(session, batch_id, viewbuffer.BATCH_TASK_NAME):
                added = posts.add_view_counts(session, counts, chunk_size)
    viewbuffer.forget_batch(redis, keys, batch_id)
    if added is None:
        if restored:
            log.warning(
                "view batch %s came back after Redis went back in time (a snapshot restore or "
                "a failover to a lagging replica) but was already applied: dropped the %d "
                "views it held; views recorded after that snapshot may be lost",
                batch_id,
                sum(counts.values()),
            )
        else:
            log.info("view batch %s was already applied; removed it from Redis", batch_id)
        return 0
    log.info("view batch %s: added %d views to %d posts", batch_id, added.views, added.posts)
    if added.dropped_views:
        log.warning(
            "view batch %s: dropped %d views of %d posts that no longer exist",
            batch_id,
            added.dropped_views,
            added.missing_posts,
        )
    return added.views


def _report_vanished(batch_id: str) -> None:
    if _applied(batch_id):  # another flush applied and removed it since this one listed it
        log.info("view batch %s was already applied; another flush removed it", batch_id)
    else:
        log.warning(
            "view batch %s vanished from Redis before it was applied: its views are lost "
            "(evicted, deleted, or Redis went back in time)",
            batch_id,
        )
