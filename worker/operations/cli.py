"""`python -m worker`: operator commands (dead letters, the outbox relay, database roles, the
dashboard)."""

from __future__ import annotations

import logging
import os

import click

from worker.config import ConfigError, get_settings, mask_url
from worker.operations.cli_params import Seconds
from worker.operations.db_cli import db_group
from worker.operations.failures_cli import failures_group
from worker.operations.health_cli import health_command
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
    """Print the settings in use (passwords masked), as the worker will apply them."""
    current = get_settings()
    for name, value in current.model_dump().items():
        note = ""
        if name == "database_url":
            shown: object = mask_url(current.database_url.get_secret_value())
        elif name == "redis_url":
            shown = mask_url(current.redis_url.get_secret_value())
        elif name == "worker_concurrency":
            shown = current.pool_children
            if value is None:
                cpus = os.cpu_count() or 1
                note = f"  # unset: WORKER_CHILDREN_PER_CPU x {cpus} CPU{'s' if cpus > 1 else ''}"
        elif name == "extra_task_modules":
            shown = ",".join(value)
        else:
            shown = value
        click.echo(f"{name.upper()}={shown!s}{note}")


@main.group()
def outbox() -> None:
    """The transactional outbox: relay pending tasks to the broker, inspect, prune."""


@outbox.command("relay")
@click.option("--once/--loop", default=True, help="Relay what is pending and exit, or keep going.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=Seconds(0.01, 3600.0),
    help="Seconds between loop rounds.",
)
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9541, show_default=True, type=click.IntRange(1, 65535))
@click.option("--read-only", is_flag=True, help="Show everything, hide and refuse every action.")
def dashboard(host: str, port: int, read_only: bool) -> None:
    """Serve the operators' dashboard: queues, workers, dead letters, the outbox, tasks.

    Run it as the owner (the DATABASE_URL migrations use). Off 127.0.0.1 it needs
    DASHBOARD_PASSWORD (HTTP basic auth as DASHBOARD_USER); every page has a JSON twin
    under /api.
    """
    from worker.operations.dashboard import missing_requirement
    from worker.operations.dashboard.auth import bind_refusal

    current = get_settings()
    refusal = bind_refusal(host, current.dashboard_password is not None)
    if refusal is not None:
        click.echo(refusal, err=True)
        raise SystemExit(2)
    missing = missing_requirement()
    if missing is not None:
        raise click.ClickException(f"the dashboard needs {missing}: pip install -e '.[dashboard]'")
    import uvicorn

    from worker.operations.dashboard.app import create_app

    _check_owner()
    app = create_app(current, read_only=read_only)
    click.echo(f"dashboard on http://{host}:{port}/ (JSON under /api){' read-only' * read_only}")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


def _check_owner() -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from worker.db import session_scope

    try:
        with session_scope() as session:
            allowed = session.scalar(
                text("SELECT has_table_privilege('public.task_failures', 'SELECT, DELETE')")
            )
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise click.ClickException(f"PostgreSQL did not answer: {reason}") from None
    if not allowed:
        raise click.ClickException(
            "the dashboard reads and deletes dead letters: give it the owner's DATABASE_URL "
            "(the one migrations use), not the runtime role's"
        )


main.add_command(failures_group)
main.add_command(db_group)
main.add_command(quarantine_group)
main.add_command(health_command)
