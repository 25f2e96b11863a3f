"""`python -m worker db`: the runtime database role and the connection budget."""

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


@db_group.command("budget")
@click.option(
    "--nodes",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Worker nodes (machines, pods) that will run with these settings.",
)
@click.option(
    "--children",
    type=click.IntRange(1),
    help="Pool children per node (-c); default: WORKER_CONCURRENCY, else "
    "WORKER_CHILDREN_PER_CPU per CPU of this machine.",
)
def db_budget(nodes: int, children: int | None) -> None:
    """Print the most PostgreSQL connections a node and the fleet can hold, and the limit.

    Every process is counted with its pool full: pool children, each node's main process (one
    short check at a time) and the fleet's one beat. The limit is DB_CONNECTION_LIMIT, else
    what the server gives roles that are not superusers. Exits 1 when the fleet would overrun it.
    """
    from worker.config import get_settings
    from worker.operations import budget

    settings = get_settings()
    node = budget.NodeBudget.of(settings, children)
    fleet = budget.FleetBudget(nodes, node)
    limit = budget.configured_limit(settings)
    in_use = None
    try:
        if limit is None:
            with budget.short_connection(settings) as connection:
                limit = budget.server_limit(connection)
                in_use = budget.connections_in_use(connection)
    except budget.ServerUnavailable as error:
        raise click.ClickException(f"cannot read the server's connection limit: {error}") from None
    machines = f"{nodes} node{'s' if nodes > 1 else ''}"
    click.echo(f"per node: {node.total} ({node.breakdown()})")
    click.echo(f"beat: {fleet.beat} (one per fleet, embedded in a worker or on its own)")
    click.echo(f"fleet: {fleet.total} ({machines} x {node.total} + beat {fleet.beat})")
    click.echo(f"limit: {limit.allowed} ({limit.source})")
    if in_use is not None:
        click.echo(f"in use now: {in_use}")
    over = fleet.total - limit.allowed
    if over > 0:
        raise click.ClickException(
            f"{machines} would overrun the limit by {over} connection{'s' if over > 1 else ''}: "
            "lower DB_POOL_SIZE, DB_MAX_OVERFLOW or WORKER_CONCURRENCY, or put PgBouncer in "
            "front and set DB_CONNECTION_LIMIT (docs/operations.md#pgbouncer)"
        )
