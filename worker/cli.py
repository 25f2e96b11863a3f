"""`python -m worker`: operator commands (dead letters, the outbox relay, database roles)."""

from __future__ import annotations

import logging

import click

from worker.config import ConfigError, get_settings
from worker.devservices import mask_url


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
