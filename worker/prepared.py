"""Server-side prepared statements for the hot path: parsed and planned once per connection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import CursorResult, TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

# An engine option carrying DB_PREPARED_STATEMENTS (set by `worker.db.build_engine`); an engine
# without it prepares statements, as the setting's default does.
PREPARED_STATEMENTS_OPTION: Final = "worker_prepared_statements"


# Kept in the DBAPI connection's `info`, which SQLAlchemy clears when it replaces the connection.
_PREPARED_KEY: Final = "worker.prepared_statements"
# The server's prepared statements and our record of them disagree (e.g. someone ran DISCARD ALL):
# invalid_sql_statement_name (lost on the server) and duplicate_prepared_statement (forgotten here).
OUT_OF_STEP_SQLSTATES: Final = frozenset({"26000", "42P05"})
# A `:name` parameter; `::type` casts are not parameters.
_PARAMETER: Final = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


class PreparedStatement:
    """One SQL statement with `:name` parameters, run as PREPARE once and EXECUTE after.

    PostgreSQL parses and plans a plain statement on every run; for a statement a task runs
    thousands of times a second that is a large share of the server's work. The statement is
    prepared on first use in each connection (PREPARE is not transactional: a rollback keeps it).
    With DB_PREPARED_STATEMENTS off, for poolers that share server sessions between clients
    (PgBouncer in transaction mode), it runs as plain SQL with the same parameters.
    """

    def __init__(self, name: str, sql: str, parameter_types: Mapping[str, str]) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
        self.name = name
        self.plain: TextClause = text(sql)
        order = list(parameter_types)
        found = set(_PARAMETER.findall(sql))
        if found != set(order):
            raise ValueError(f"{name}: parameters {sorted(found)} but types for {order}")
        body = _PARAMETER.sub(lambda match: f"${order.index(match[1]) + 1}", sql)
        types = ", ".join(parameter_types.values())
        self.prepare_sql = f"PREPARE {name} ({types}) AS {body}"
        self.execute_sql = f"EXECUTE {name} ({', '.join(f'%({p})s' for p in order)})"

    def execute(self, session: Session, parameters: Mapping[str, Any]) -> CursorResult[Any]:
        """Run the statement in the session's transaction."""
        connection = session.connection()
        if not connection.get_execution_options().get(PREPARED_STATEMENTS_OPTION, True):
            return connection.execute(self.plain, dict(parameters))
        prepared: set[str] = connection.connection.info.setdefault(_PREPARED_KEY, set())
        try:
            if self.name not in prepared:
                connection.exec_driver_sql(self.prepare_sql)
                prepared.add(self.name)
            return connection.exec_driver_sql(self.execute_sql, dict(parameters))
        except DBAPIError as error:
            if getattr(error.orig, "pgcode", None) in OUT_OF_STEP_SQLSTATES:
                # A new connection prepares afresh on the next attempt (the task retries).
                connection.invalidate()
            raise
