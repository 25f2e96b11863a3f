"""The connection budget: the most PostgreSQL connections workers can hold, against the limit.

Each process counts its whole pool (`DB_POOL_SIZE + DB_MAX_OVERFLOW`) as if it were full: pool
children, the one beat, and the main process's single short check. The limit is what the server
gives ordinary roles (`max_connections` less its reserved slots), or `DB_CONNECTION_LIMIT`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from worker.config import Settings
from worker.operations import fail_fast

log = logging.getLogger(__name__)

# The main process holds no pool: its start-up check (and a readiness check, if it makes one)
# opens one connection at a time and closes it.
MAIN_PROCESS_CONNECTIONS = 1
CHECK_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class NodeBudget:
    """One worker node's worst case: every process's pool full at the same moment."""

    children: int
    pool_size: int
    max_overflow: int
    beat: bool = False

    @classmethod
    def of(cls, settings: Settings, children: int | None = None, beat: bool = False) -> NodeBudget:
        """The node `settings` describe; `children` overrides WORKER_CONCURRENCY (`-c`)."""
        count = settings.pool_children if children is None else children
        return cls(count, settings.db_pool_size, settings.db_max_overflow, beat)

    @property
    def per_process(self) -> int:
        return self.pool_size + self.max_overflow

    @property
    def total(self) -> int:
        beat = self.per_process if self.beat else 0
        return self.children * self.per_process + MAIN_PROCESS_CONNECTIONS + beat

    def breakdown(self) -> str:
        """`6 children x (DB_POOL_SIZE 1 + DB_MAX_OVERFLOW 0) + 1 main process`, and beat."""
        pool = f"DB_POOL_SIZE {self.pool_size} + DB_MAX_OVERFLOW {self.max_overflow}"
        parts = f"{self.children} children x ({pool}) + {MAIN_PROCESS_CONNECTIONS} main process"
        if self.beat:
            parts += f" + {self.per_process} embedded beat"
        return parts


@dataclass(frozen=True)
class FleetBudget:
    """`nodes` worker nodes without beat, and the fleet's one beat, embedded or on its own."""

    nodes: int
    node: NodeBudget

    @property
    def beat(self) -> int:
        return self.node.per_process

    @property
    def total(self) -> int:
        return self.nodes * self.node.total + self.beat


@dataclass(frozen=True)
class Limit:
    """Connections the workers may open, and where that figure comes from."""

    allowed: int
    source: str


class ServerUnavailable(RuntimeError):
    """The server did not answer the short connection (unreachable, refused, timed out)."""


def configured_limit(settings: Settings) -> Limit | None:
    """DB_CONNECTION_LIMIT as a `Limit`, or None when the server is to be asked."""
    if settings.db_connection_limit is None:
        return None
    limit = settings.db_connection_limit
    return Limit(limit, f"DB_CONNECTION_LIMIT {limit}")


def server_limit(connection: Connection) -> Limit:
    """What the server gives roles that are not superusers (reserved_connections: 16+)."""
    total, superuser, reserved = connection.execute(
        text(
            "SELECT current_setting('max_connections')::int, "
            "current_setting('superuser_reserved_connections')::int, "
            "coalesce(current_setting('reserved_connections', true), '0')::int"
        )
    ).one()
    source = f"max_connections {total} - superuser_reserved_connections {superuser}"
    if reserved:
        source += f" - reserved_connections {reserved}"
    return Limit(total - superuser - reserved, source)


def connections_in_use(connection: Connection) -> int:
    """Client connections open on the server now, this one included."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    return int(connection.scalar(text(query)) or 0)


@contextmanager
def short_connection(settings: Settings) -> Iterator[Connection]:
    """One connection with short timeouts and no pool, closed on exit: for a process that
    must keep none (the worker's main process) or needs one only briefly (a command)."""
    engine = fail_fast.postgres_engine(settings, timeout=CHECK_TIMEOUT_SECONDS)
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error  # the driver's message, not the SQL
        raise ServerUnavailable(str(cause).strip().splitlines()[0]) from None
    finally:
        engine.dispose()


def read_limit(settings: Settings) -> Limit:
    """DB_CONNECTION_LIMIT, else the server's, asked over one short connection.

    Raises `ServerUnavailable` when the server does not answer.
    """
    configured = configured_limit(settings)
    if configured is not None:
        return configured
    with short_connection(settings) as connection:
        return server_limit(connection)


def over_budget(node: NodeBudget, limit: Limit) -> str | None:
    """Why `node` alone would overrun `limit`, naming the settings to change; None if it fits."""
    if node.total <= limit.allowed:
        return None
    return (
        f"refusing to start: this node alone may open {node.total} PostgreSQL connections "
        f"({node.breakdown()}), more than the {limit.allowed} allowed ({limit.source}); lower "
        "DB_POOL_SIZE, DB_MAX_OVERFLOW or WORKER_CONCURRENCY (-c), or put PgBouncer in front "
        "and set DB_CONNECTION_LIMIT to its max_client_conn"
    )


def check_node(settings: Settings, node: NodeBudget) -> str | None:
    """Log the node's worst case against the limit; the reason to refuse to start, if any.

    A server that cannot be asked is no reason to refuse: the worker waits for PostgreSQL as
    it does for any outage, and the budget goes unchecked (a WARNING says so).
    """
    try:
        limit = read_limit(settings)
    except ServerUnavailable as error:
        log.warning(
            "connection budget: this node may open %d PostgreSQL connections (%s); not "
            "checked, the server's limit could not be read: %s",
            node.total,
            node.breakdown(),
            error,
        )
        return None
    problem = over_budget(node, limit)
    if problem is None:
        log.info(
            "connection budget: this node may open %d PostgreSQL connections (%s); %d allowed (%s)",
            node.total,
            node.breakdown(),
            limit.allowed,
            limit.source,
        )
    return problem
