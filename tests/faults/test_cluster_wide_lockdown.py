"""create-runtime-role --cluster-wide: PUBLIC loses CONNECT and TEMPORARY on every database.

Only ever on the test's throwaway cluster: the command revokes access for every role that relied
on PUBLIC, which on a shared server would lock other people's roles out of their databases.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from worker.development.databases import (
    TEST_RUNTIME_ROLE,
    as_runtime_role,
    create_database,
    unpooled,
)
from worker.development.processes import run_cli
from worker.development.servers import PostgresServer


def connect_error(url: URL, statement: str = "SELECT current_user") -> str | None:
    """None if `url` logs in and runs `statement`, else the server's error message."""
    try:
        with unpooled(url) as engine, engine.connect() as connection:
            connection.execute(text(statement))
    except (OperationalError, ProgrammingError) as error:
        return str(error.orig)
    return None


def test_cluster_wide_option_closes_every_other_database_to_public(
    pg: PostgresServer, db: Engine
) -> None:
    # Given the worker's database and another one, which the runtime role reaches through PUBLIC
    worker_db = make_url(pg.url)
    assert worker_db.port != 5432, "never on the shared server"
    other = create_database(worker_db, "reporting")
    runtime = as_runtime_role(worker_db)
    assert connect_error(as_runtime_role(other)) is None

    # When the owner runs create-runtime-role --cluster-wide against this cluster only
    env = {**os.environ, "DATABASE_URL": worker_db.render_as_string(hide_password=False)}
    done = run_cli(env, "db", "create-runtime-role", TEST_RUNTIME_ROLE, "--cluster-wide")
    assert done.returncode == 0, done.stderr
    assert "TEMPORARY tables in: postgres, reporting\n" in done.stdout
    assert "warning" not in done.stderr

    # Then the runtime role can no longer connect to the other database
    refused = connect_error(as_runtime_role(other))
    assert refused is not None
    assert f'permission denied for database "{other.database}"' in refused
    # And in its own it connects, but creates no temporary table
    assert connect_error(runtime) is None
    no_temp = connect_error(runtime, "CREATE TEMP TABLE stolen (id int)")
    assert no_temp is not None
    assert "permission denied to create temporary tables" in no_temp
    # And the owner keeps both databases, while PUBLIC has neither
    assert connect_error(other) is None
    with db.connect() as connection:
        still_open = connection.scalar(
            text(
                "SELECT count(*) FROM pg_database WHERE NOT datistemplate "
                "AND (has_database_privilege('public', oid, 'CONNECT') "
                "OR has_database_privilege('public', oid, 'TEMPORARY'))"
            )
        )
    assert still_open == 0
