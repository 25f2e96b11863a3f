"""runtime privileges: the ledger prune and the dead-letter upsert as SECURITY DEFINER functions

The runtime role gets EXECUTE on these two functions instead of DELETE on processed_tasks and
INSERT/UPDATE/DELETE on task_failures, so it cannot undo exactly-once or edit a dead letter.
They run as this migration's user; `python -m worker db create-runtime-role` grants EXECUTE.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Both functions run with their owner's rights, so search_path is pinned (pg_temp last, else it
# is searched first) and every table is schema-qualified: no schema or temporary table the
# caller controls can stand in for a table, function or operator.
PRUNE_PROCESSED_TASKS = """
CREATE FUNCTION public.prune_processed_tasks(retention interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    -- A short retention would forget ids whose messages may still be redelivered.
    IF retention IS NULL OR retention < interval '1 day' THEN
        RAISE EXCEPTION 'retention % is below the minimum of 1 day', retention
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM public.processed_tasks WHERE finished_at < now() - retention;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$
"""

# An existing dead letter keeps its task name and arguments: a repeated failure only bumps the
# attempts and records the latest error.
RECORD_TASK_FAILURE = """
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

_SIGNATURES = (
    "public.prune_processed_tasks(interval)",
    "public.record_task_failure(text, text, jsonb, jsonb, text, text, integer)",
)


def upgrade() -> None:
    op.execute(PRUNE_PROCESSED_TASKS)
    op.execute(RECORD_TASK_FAILURE)
    for signature in _SIGNATURES:
        # New functions are executable by PUBLIC: only the roles granted EXECUTE may call these.
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")


def downgrade() -> None:
    for signature in _SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
