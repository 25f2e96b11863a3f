"""`python -m worker quarantine`: read and purge raw messages refused with no id to keep them by."""

from __future__ import annotations

import base64
import sys

import click
from redis import Redis

from worker.config import get_settings
from worker.runtime import quarantine


def _redis() -> Redis:
    return Redis.from_url(get_settings().redis_url.get_secret_value(), socket_timeout=10)


def _queue(queue: str | None) -> str:
    return queue or get_settings().task_queue


@click.group("quarantine")
def quarantine_group() -> None:
    """Raw messages the worker refused and could not dead-letter (no id): newest first."""


_QUEUE = click.option("--queue", help="Task queue (default: TASK_QUEUE).")


@quarantine_group.command("list")
@_QUEUE
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
def quarantine_list(queue: str | None, limit: int) -> None:
    """One line per quarantined message: digest, size, when, why."""
    with _redis() as redis:
        name = _queue(queue)
        kept = quarantine.entries(redis, name, limit)
        total = quarantine.count(redis, name)
    if not kept:
        click.echo("no quarantined messages")
        return
    for entry in kept:
        click.echo(
            f"{entry.digest}  {entry.size:>9} B  {entry.received_at[:19]}  "
            f"{entry.error_class}: {entry.reason[:100]}"
        )
    click.echo(f"{len(kept)} of {total} quarantined messages shown")


@quarantine_group.command("show")
@click.argument("digest")
@_QUEUE
@click.option("--raw", "as_raw", is_flag=True, help="Write the message's bytes to stdout as is.")
def quarantine_show(digest: str, queue: str | None, as_raw: bool) -> None:
    """Print one quarantined message (its bytes base64-encoded, or raw with --raw)."""
    with _redis() as redis:
        entry = quarantine.find(redis, _queue(queue), digest)
    if entry is None:
        raise click.ClickException(f"no quarantined message with digest {digest!r}")
    if as_raw:
        sys.stdout.buffer.write(entry.raw)
        return
    for label, value in (
        ("digest", entry.digest),
        ("received", entry.received_at),
        ("error", entry.error_class),
        ("reason", entry.reason),
        ("size", f"{entry.size} bytes" + (" (cut when kept)" if entry.truncated else "")),
        ("base64", base64.b64encode(entry.raw).decode()),
    ):
        click.echo(f"{label + ':':<10}{value}")


@quarantine_group.command("purge")
@click.argument("digest", required=False)
@_QUEUE
@click.option("--all", "all_", is_flag=True, help="Purge every quarantined message.")
def quarantine_purge(digest: str | None, queue: str | None, all_: bool) -> None:
    """Delete one quarantined message by digest, or all of them with --all."""
    if (digest is None) == (not all_):
        raise click.UsageError("give one DIGEST or --all")
    with _redis() as redis:
        removed = quarantine.purge(redis, _queue(queue), None if all_ else digest)
    if digest is not None and removed == 0:
        raise click.ClickException(f"no quarantined message with digest {digest!r}")
    click.echo(f"purged {removed} quarantined message{'s' if removed != 1 else ''}")
