"""sample backlog: the counts the worker's metrics need, for a role that may not read the tables

`public.sample_backlog()` returns the number of dead letters, of outbox rows not yet published,
and the age of the oldest of those. A pool child calls it for the `worker_dead_letters` and
`worker_outbox_*` gauges (`worker.operations.backlog`) as the runtime role, which has no
privilege on task_failures and no read of task_outbox.created_at: it learns the counts, never
a row. `python -m worker db create-runtime-role` grants EXECUTE.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "public.sample_backlog()"

# As in 0003: it runs with its owner's rights, so search_path is pinned (pg_temp last) and every
# table is schema-qualified. The oldest pending row is the lowest pending id: one probe of the
# partial index ix_task_outbox_pending.
SAMPLE_BACKLOG = """
CREATE FUNCTION public.sample_backlog(
    OUT dead_letters bigint,
    OUT outbox_pending bigint,
    OUT outbox_oldest_age_seconds double precision
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT
        (SELECT count(*) FROM public.task_failures),
        (SELECT count(*) FROM public.task_outbox WHERE sent_at IS NULL),
        (SELECT extract(epoch FROM now() - created_at)::double precision
           FROM public.task_outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1)
$$
"""


def upgrade() -> None:
    op.execute(SAMPLE_BACKLOG)
    # New functions are executable by PUBLIC: only the roles granted EXECUTE may call it.
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
