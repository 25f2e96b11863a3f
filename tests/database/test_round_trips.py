"""Round trips per task: pre-ping without `SELECT 1`, yet a closed connection is replaced.

These run against a committed database with the worker's own engine (`build_engine`), because
the plugin's joined test connection hides what the pool and the driver really send.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from worker import db
from worker.development.live import wait_until


def backend_of_last_session() -> int:
    with db.session_scope() as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")))


def last_query(observer: Engine, backend: int) -> str:
    with observer.connect() as connection:
        query = connection.scalar(
            text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
        )
    return str(query)


def test_pre_ping_sends_nothing_to_a_healthy_connection(
    worker_engine: Engine, live_db: Engine
) -> None:
    # Given a pooled connection whose last statement was the session's COMMIT
    backend = backend_of_last_session()
    assert last_query(live_db, backend) == "COMMIT"

    # When a new session checks it out (pre-ping runs at checkout)
    with db.session_scope() as session:
        session.connection()
        # Then the server saw no `SELECT 1`: its last query is still the one before
        assert last_query(live_db, backend) == "COMMIT"


def test_sqlalchemys_own_pre_ping_would_send_select_1(
    committed_db_url: URL, live_db: Engine
) -> None:
    # The control for the test above: the same check sees the stock ping's round trip.
    engine = create_engine(committed_db_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    with db.engine_installed(engine):
        backend = backend_of_last_session()
        with db.session_scope() as session:
            session.connection()
            assert last_query(live_db, backend) == "SELECT 1"
    engine.dispose()


def test_pre_ping_replaces_a_connection_the_server_closed(
    worker_engine: Engine, live_db: Engine
) -> None:
    # Given a pooled connection that the server then terminates (as on a restart)
    backend = backend_of_last_session()
    with live_db.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    wait_until(lambda: last_query(live_db, backend) == "None", 10, 0.05, "backend gone")

    # When the next session runs, it gets a new connection instead of an error
    assert backend_of_last_session() != backend
