"""`python -m worker`: operator commands (dead letters, the outbox relay, database roles)."""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

import click
from sqlalchemy import text

from worker.config import ConfigError, get_settings
from worker.development.services import mask_url
from worker.operations.quarantine_cli import quarantine_group


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """Operate the platform worker."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        get_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
def settings() -> None:
    """Print the settings in use (passwords masked)."""
    current = get_settings()
    for name, value in current.model_dump().items():
        if name == "database_url":
            shown: object = current.sqlalchemy_url
        elif name == "redis_url":
            shown = mask_url(current.redis_url.get_secret_value())
        else:
            shown = value
        click.echo(f"{name.upper()}={shown!s}")


@main.group()
def outbox() -> None:
    """The transactional outbox: relay pending tasks to the broker, inspect, prune."""


@outbox.command("relay")
@click.option("--once/--loop", default=True, help="Relay what is pending and exit, or keep going.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between loop rounds.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 10_000))
def outbox_relay(once: bool, interval: float, batch_size: int) -> None:
    """Publish pending outbox rows in order and mark them sent (safe to run several at once)."""
    import signal
    import threading

    from worker.operations.relay import relay

    if once:
        report = relay(batch_size=batch_size)
        click.echo(f"published {report.sent}, dead-lettered {report.dead_lettered}")
        if report.error is not None:
            raise click.ClickException(f"rows stay pending, the broker failed: {report.error}")
        return
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.is_set():
            relay(batch_size=batch_size)
            stopping.wait(interval)
    except KeyboardInterrupt:
        pass


@outbox.command("status")
def outbox_status() -> None:
    """Print pending rows, the age of the oldest, and the latest publish error."""
    from worker.db import session_scope
    from worker.operations.relay import status

    with session_scope() as session:
        current = status(session)
    oldest = current.oldest_pending_seconds
    age = "-" if oldest is None else f"{oldest:.0f}s"
    click.echo(f"pending={current.pending} oldest={age} failing={current.failing}")
    if current.last_error:
        click.echo(f"last_error={current.last_error}")


@outbox.command("prune")
@click.option("--older-than-days", default=7, show_default=True, type=click.IntRange(1))
def outbox_prune(older_than_days: int) -> None:
    """Delete rows that were sent more than N days ago."""
    from datetime import timedelta

    from worker.db import session_scope
    from worker.operations.relay import prune_sent

    with session_scope() as session:
        removed = prune_sent(session, timedelta(days=older_than_days))
    click.echo(f"removed {removed} sent rows")


@main.group()
def failures() -> None:
    """Dead letters (task_failures): list, show, requeue, purge."""


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@failures.command("list")
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


@failures.command("show")
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
        ("first failed", row.first_failed_at.isoformat()),
        ("last failed", row.last_failed_at.isoformat()),
    ):
        click.echo(f"{label + ':':<14}{value}")


@failures.command("retry")
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


@failures.command("purge")
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


@main.group("db")
def db_group() -> None:
    """Database administration, run as the schema owner (DATABASE_URL)."""


@db_group.command("create-runtime-role")
@click.argument("name")
@click.option(
    "--password-env",
    metavar="VAR",
    help="Environment variable holding the role's password (never a command-line argument).",
)
@click.option(
    "--cluster-wide",
    is_flag=True,
    help="Also revoke CONNECT and TEMPORARY from PUBLIC on every other non-template database of "
    "the cluster (needs a superuser or their owners); roles that connect to them through PUBLIC "
    "then need an explicit GRANT CONNECT.",
)
def db_create_runtime_role(name: str, password_env: str | None, cluster_wide: bool) -> None:
    """Create or update NAME: a LOGIN role with only the privileges the tasks need.

    Run it in the worker's database after each migration, then give the worker a DATABASE_URL
    that logs in as NAME. Migrations keep running as the owner. PUBLIC loses CONNECT and
    TEMPORARY on this database: NAME gets CONNECT, its owner and superusers keep both, any other
    role needs its own GRANT CONNECT.
    """
    import os

    from worker.db import get_engine
    from worker.operations import roles

    password = None
    if password_env is not None:
        # Read here, not in Settings: it is this command's input, not the worker's configuration.
        password = os.environ.get(password_env)
        if not password:
            raise click.ClickException(f"{password_env} is not set or empty")
    try:
        with get_engine().begin() as connection:
            created = roles.create_runtime_role(connection, name, password)
            closed = roles.revoke_public_access_cluster_wide(connection) if cluster_wide else []
            database = connection.scalar(text("SELECT current_database()"))
            can_create = roles.can_create_in_schema(connection, name)
            still_open = roles.open_to_public(connection)
    except roles.RoleError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{'created' if created else 'updated'} role {name} in database {database}: "
        f"{'password set, ' if password else ''}only the privileges the tasks need"
    )
    for grant in roles.RUNTIME_GRANTS:
        click.echo(f"  {grant.table}: {grant.described()}")
    for function in roles.RUNTIME_FUNCTIONS:
        click.echo(f"  {function}: EXECUTE")
    locked = [each for each in (database, *closed) if each not in still_open]
    if locked:
        click.echo(f"PUBLIC may not CONNECT to or create TEMPORARY tables in: {', '.join(locked)}")
    if can_create:
        click.echo(
            f"warning: {name} can still CREATE in schema public through PUBLIC (PostgreSQL < 15); "
            "run REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            err=True,
        )
    if database in still_open:
        click.echo(
            f"warning: PUBLIC keeps CONNECT or TEMPORARY on {database}: run this command as the "
            "database owner or a superuser",
            err=True,
        )
    others = [other for other in still_open if other != database]
    if others:
        hint = "run as a superuser" if cluster_wide else "--cluster-wide revokes that"
        click.echo(
            f"warning: any role may still connect to {', '.join(others)} through PUBLIC; {hint}",
            err=True,
        )


main.add_command(quarantine_group)
