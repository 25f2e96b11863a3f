"""`python -m worker failures`: list, show, retry and purge dead letters (run as the owner)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import click

from worker.config import get_settings


@click.group("failures")
def failures_group() -> None:
    """Dead letters (task_failures): list, show, requeue, purge."""


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@failures_group.command("list")
@click.option("--task", "task_name", help="Only dead letters of this task name.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
def failures_list(task_name: str | None, limit: int) -> None:
    """The most recent dead letters, one a line."""
    from worker.db import session_scope
    from worker.operations import deadletters

    with session_scope() as session:
        rows = deadletters.list_failures(session, task_name=task_name, limit=limit)
        total = deadletters.count_failures(session)
    if not rows:
        click.echo("no dead letters")
        return
    click.echo(f"{'TASK ID':<36}  {'TASK':<32}  {'ERROR':<22}  TRIES  LAST FAILED (UTC)")
    for row in rows:
        when = row.last_failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{_short(row.task_id, 36):<36}  {_short(row.task_name, 32):<32}  "
            f"{_short(row.error_class, 22):<22}  {row.attempts:>5}  {when}"
        )
    click.echo(f"{len(rows)} of {total} dead letters shown")


@failures_group.command("show")
@click.argument("task_id")
def failures_show(task_id: str) -> None:
    """Everything recorded about one dead letter."""
    import json

    from worker.db import session_scope
    from worker.operations import deadletters

    with session_scope() as session:
        row = deadletters.get_failure(session, task_id)
    if row is None:
        raise click.ClickException(f"no dead letter with task id {task_id!r}")
    for label, value in (
        ("task id", row.task_id),
        ("task", row.task_name),
        ("args", json.dumps(row.args)),
        ("kwargs", json.dumps(row.kwargs)),
        ("error", f"{row.error_class}: {row.error_message}"),
        ("attempts", row.attempts),
        # The request that caused the task: find its log lines by this id, or by the task id.
        ("correlation", row.correlation_id or "(none sent)"),
        ("first failed", row.first_failed_at.isoformat()),
        ("last failed", row.last_failed_at.isoformat()),
    ):
        click.echo(f"{label + ':':<14}{value}")


@failures_group.command("retry")
@click.argument("task_ids", nargs=-1, metavar="[TASK_ID]...")
@click.option("--all", "all_", is_flag=True, help="Every dead letter (oldest first).")
@click.option("--task", "task_name", help="With --all: only dead letters of this task name.")
def failures_retry(task_ids: tuple[str, ...], all_: bool, task_name: str | None) -> None:
    """Publish dead letters again as new tasks, never applying a task twice.

    Each dead letter, in a transaction of its own, is one of:

    \b
    requeued  published under a new task id derived from it (the same one on
              every retry, so publishing twice applies once), then deleted; its
              own id is recorded as processed, so a late delivery of it skips;
    skipped   its task id is in processed_tasks: its effect is committed (say a
              delivery dead-lettered as PoisonMessage while another finished).
              Deleted, as it is resolved: once processed_tasks is pruned,
              nothing would stop a later retry from applying it again;
    refused   not a public task (only record_view, deactivate_user and
              deactivate_dormant_users are), or its args and kwargs are not
              exactly a JSON list and object that fit the task: kept, for
              `show` and `purge`.

    The last line sums up. Exit status 0 when every dead letter was handled by
    these rules, skips and refusals included; 1 when a TASK_ID given has no dead
    letter, or the broker did not take a message (that dead letter is kept and
    the rest are not tried).
    """
    from worker.celery_app import app
    from worker.db import session_scope
    from worker.operations import deadletters

    if bool(task_ids) == all_:
        raise click.UsageError("give TASK_IDs or --all")
    if task_name is not None and not all_:
        raise click.UsageError("--task goes with --all")
    queue = get_settings().task_queue

    def publish(name: str, args: list[Any], kwargs: dict[str, Any], new_id: str) -> None:
        app.send_task(name, args=args, kwargs=kwargs, task_id=new_id, queue=queue)

    ids: list[str] = list(dict.fromkeys(task_ids))
    if all_:
        with session_scope() as session:
            ids = deadletters.dead_letter_ids(session, task_name=task_name)
        if not ids:
            click.echo("no dead letters")
    outcomes: list[deadletters.RetryOutcome] = []
    failed = False
    try:
        for outcome in deadletters.retry_each(session_scope, ids, publish):
            outcomes.append(outcome)
            missing = outcome.outcome is deadletters.Outcome.MISSING
            failed = failed or (missing and not all_)  # with --all, retried or purged meanwhile
            click.echo(outcome.describe(), err=missing)
    except deadletters.PublishFailed as error:
        failed = True
        click.echo(f"stopped: {error}; its dead letter is kept", err=True)
    click.echo(deadletters.summarize(outcomes))
    if failed:
        raise click.exceptions.Exit(1)


@failures_group.command("purge")
@click.argument("task_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@click.option("--older-than", type=click.IntRange(0), metavar="DAYS", help="Last failed before.")
def failures_purge(task_id: str | None, all_: bool, older_than: int | None) -> None:
    """Delete one dead letter, those older than DAYS, or all of them."""
    from datetime import timedelta

    from worker.db import session_scope
    from worker.operations import deadletters

    if sum((task_id is not None, all_, older_than is not None)) != 1:
        raise click.UsageError("give exactly one of TASK_ID, --all or --older-than DAYS")
    age = timedelta(days=older_than) if older_than is not None else None
    with session_scope() as session:
        removed = deadletters.purge(session, task_id=task_id, older_than=age)
    if task_id is not None and not removed:
        raise click.ClickException(f"no dead letter with task id {task_id!r}")
    click.echo(f"purged {removed} dead letter{'s' if removed != 1 else ''}")
