"""User deactivation, one user or every dormant one: functions that take a session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from worker.errors import NotFound
from worker.models import User


def deactivate_user(session: Session, user_id: int) -> bool:
    """Deactivate an active user; return False (and change nothing) if already inactive."""
    changed = session.execute(
        update(User)
        .where(User.id == user_id, User.is_active.is_(True))
        .values(is_active=False, deactivated_at=func.now())
        .returning(User.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if changed is not None:
        return True
    # Only granted columns: the runtime role may not read a whole users row.
    if session.scalar(select(User.id).where(User.id == user_id)) is None:
        raise NotFound("user", user_id)
    return False


def dormant_cutoff(session: Session, inactive_days: int) -> datetime:
    """The database's own clock minus `inactive_days`: users last seen before it are dormant."""
    cutoff: datetime | None = session.scalar(select(func.now() - timedelta(days=inactive_days)))
    assert cutoff is not None
    return cutoff


def count_dormant(session: Session, cutoff: datetime) -> int:
    """How many active users were last seen (or created, if never seen) before `cutoff`."""
    return (
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.is_active.is_(True), func.coalesce(User.last_seen_at, User.created_at) < cutoff
            )
        )
        or 0
    )


@dataclass(frozen=True)
class Batch:
    changed: int
    last_id: int | None


_DEACTIVATE_BATCH = text(
    """
    WITH batch AS (
        SELECT id FROM users
        WHERE is_active AND id > :after_id AND coalesce(last_seen_at, created_at) < :cutoff
        ORDER BY id
        LIMIT :batch_size
        FOR NO KEY UPDATE SKIP LOCKED
    ), changed AS (
        UPDATE users SET is_active = false, deactivated_at = now(), updated_at = now()
        WHERE id = ANY (ARRAY(SELECT id FROM batch))
        RETURNING id
    )
    SELECT count(*) AS changed, max(id) AS last_id FROM changed
    """
)


def deactivate_dormant_batch(
    session: Session, cutoff: datetime, after_id: int, batch_size: int
) -> Batch:
    """Deactivate the next `batch_size` dormant users with id above `after_id` (keyset paging).

    Rows locked by another transaction are skipped rather than waited for; a later run takes
    them. The lock is FOR NO KEY UPDATE, so posts and comments can still reference these users.
    The UPDATE finds the locked rows by primary key, as one index scan over the batch's ids
    (`= ANY (ARRAY(...))`): joined to the batch instead, the planner may merge-join the whole
    primary key index. Not by ctid, which the runtime role's column grants do not cover.
    """
    # A batch lost to a database crash right after its commit is harmless: its users are
    # still dormant and active, so the next run takes them. Not waiting for the WAL flush at
    # each commit saves a disk sync per batch.
    session.execute(text("SET LOCAL synchronous_commit = off"))
    row = session.execute(
        _DEACTIVATE_BATCH, {"after_id": after_id, "cutoff": cutoff, "batch_size": batch_size}
    ).one()
    return Batch(changed=row.changed, last_id=row.last_id)
