"""dead letter correlation: task_failures.correlation_id, and record_task_failure taking it

The request that caused a task (its `correlation_id` header) is kept with its dead letter.
record_task_failure gains a last argument, `failed_correlation_id text DEFAULT NULL`: workers
still on the seven-argument call keep dead-lettering during a rolling deploy, and every role
that could execute the old function can execute the new one (`python -m worker db
create-runtime-role` grants it too).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = "public.record_task_failure(text, text, jsonb, jsonb, text, text, integer)"
NEW_SIGNATURE = "public.record_task_failure(text, text, jsonb, jsonb, text, text, integer, text)"

# As in 0003: it runs with its owner's rights, so search_path is pinned (pg_temp last) and the
# table is schema-qualified. An existing dead letter keeps its task name, arguments and
# correlation id (unless it had none): a repeated failure only bumps the attempts and records
# the latest error.
RECORD_TASK_FAILURE = """
CREATE FUNCTION public.record_task_failure(
    failed_task_id text,
    failed_task_name text,
    failed_args jsonb,
    failed_kwargs jsonb,
    failure_class text,
    failure_message text,
    failed_attempts integer,
    failed_correlation_id text DEFAULT NULL
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.task_failures AS failure
        (task_id, task_name, args, kwargs, error_class, error_message, attempts, correlation_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (task_id) DO UPDATE SET
        error_class = excluded.error_class,
        error_message = excluded.error_message,
        attempts = greatest(failure.attempts + 1, excluded.attempts),
        correlation_id = coalesce(failure.correlation_id, excluded.correlation_id),
        last_failed_at = now()
$$
"""

# 0003's function, for the downgrade.
OLD_RECORD_TASK_FAILURE = """
CREATE FUNCTION public.record_task_failure(
    failed_task_id text,
    failed_task_name text,
    failed_args jsonb,
    failed_kwargs jsonb,
    failure_class text,
    failure_message text,
    failed_attempts integer
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.task_failures AS failure
        (task_id, task_name, args, kwargs, error_class, error_message, attempts)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (task_id) DO UPDATE SET
        error_class = excluded.error_class,
        error_message = excluded.error_message,
        attempts = greatest(failure.attempts + 1, excluded.attempts),
        last_failed_at = now()
$$
"""


def _copy_execute_grants(source: str, target: str) -> None:
    """GRANT EXECUTE on `target` to every role (but the owner) holding it on `source`."""
    # The two signatures are this module's constants; the role names are quoted by regrole.
    op.execute(
        f"""
DO $$
DECLARE
    grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT acl.grantee::regrole::text
        FROM pg_catalog.pg_proc AS proc, pg_catalog.aclexplode(proc.proacl) AS acl
        WHERE proc.oid = '{source}'::regprocedure
          AND acl.privilege_type = 'EXECUTE'
          AND acl.grantee <> 0
          AND acl.grantee <> proc.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION {target} TO %s', grantee_name);
    END LOOP;
END
$$
"""  # noqa: S608
    )


def upgrade() -> None:
    op.add_column("task_failures", sa.Column("correlation_id", sa.String(200), nullable=True))
    op.execute(RECORD_TASK_FAILURE)
    # New functions are executable by PUBLIC: only the roles granted EXECUTE may call this one.
    op.execute(f"REVOKE ALL ON FUNCTION {NEW_SIGNATURE} FROM PUBLIC")
    _copy_execute_grants(OLD_SIGNATURE, NEW_SIGNATURE)
    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")


def downgrade() -> None:
    op.execute(OLD_RECORD_TASK_FAILURE)
    op.execute(f"REVOKE ALL ON FUNCTION {OLD_SIGNATURE} FROM PUBLIC")
    _copy_execute_grants(NEW_SIGNATURE, OLD_SIGNATURE)
    op.execute(f"DROP FUNCTION {NEW_SIGNATURE}")
    op.drop_column("task_failures", "correlation_id")
