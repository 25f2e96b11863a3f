"""`python -m worker db`: the runtime database role."""

from __future__ import annotations

import click
from sqlalchemy import text


@click.group("db")
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
