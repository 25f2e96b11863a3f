"""dashboard indexes: dead letters newest first, by task name or error class, and by minute

The operator dashboard (`python -m worker dashboard`) lists dead letters newest first, filtered
by task name or error class, a page at a time, and counts them per minute for the last hour.
Each of these reads is an index range in the order shown: no sort and no scan of the table,
at 100,000 dead letters as at 10. The single-column index on task_name is replaced by the
composite one, whose leading column serves the same lookups (`failures retry --all --task`).
The tables the workers write on every task (processed_tasks, task_outbox) get no new index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEWEST_FIRST = (sa.text("last_failed_at DESC"), sa.text("task_id"))


def upgrade() -> None:
    op.create_index("ix_task_failures_newest", "task_failures", [*NEWEST_FIRST])
    op.create_index(
        "ix_task_failures_task_name_newest", "task_failures", ["task_name", *NEWEST_FIRST]
    )
    op.create_index(
        "ix_task_failures_error_class_newest", "task_failures", ["error_class", *NEWEST_FIRST]
    )
    op.drop_index("ix_task_failures_task_name", table_name="task_failures")


def downgrade() -> None:
    op.create_index("ix_task_failures_task_name", "task_failures", ["task_name"])
    op.drop_index("ix_task_failures_error_class_newest", table_name="task_failures")
    op.drop_index("ix_task_failures_task_name_newest", table_name="task_failures")
    op.drop_index("ix_task_failures_newest", table_name="task_failures")
