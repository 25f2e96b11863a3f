"""One SQLAlchemy engine per OS process, created after fork, and the session scopes built on it."""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings, get_settings
from worker.per_process import PerProcess
from worker.prepared import PREPARED_STATEMENTS_OPTION

log = logging.getLogger(__name__)

# Set by the pytest plugin: sessions join this connection with savepoints instead of using the pool.
_test_connection: Connection | None = None


def build_engine(settings: Settings, pid: int) -> Engine:
    """Create an engine from settings; `application_name` tells operators which process holds it."""
    options = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    engine = create_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=settings.db_pool_recycle,
        echo=settings.db_echo_sql,
        hide_parameters=not settings.db_echo_sql,
        connect_args={"application_name": f"{settings.app_name}:{pid}", "options": options},
        execution_options={PREPARED_STATEMENTS_OPTION: settings.db_prepared_statements},
    )
    if settings.db_pool_pre_ping:
        _ping_without_round_trip(engine.dialect)
    return engine


def _ping_without_round_trip(dialect: Dialect) -> None:
    """Make pre-ping ask the socket first and send `SELECT 1` only when the server spoke.

    An idle PostgreSQL connection never receives anything unasked, so a readable socket means
    the server closed it or sent a message (e.g. "terminating connection" on a restart): then
    SQLAlchemy's own ping runs, fails and the pool reconnects, as with plain pre-ping. A silent
    socket is alive as far as a ping can tell, and checking it costs no round trip, where
    `SELECT 1` on every checkout costs one per task. A connection that died without a word
    (a cut network) fails on its first statement instead, which tasks retry as transient.
    """
    select_one_ping = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        if dbapi_connection.closed:
            return False
        poller = select.poll()  # unlike select(), fine with descriptors above 1023
        try:
            poller.register(dbapi_connection.fileno(), select.POLLIN)
            spoke = bool(poller.poll(0))
        except (OSError, ValueError):
            spoke = True
        return bool(select_one_ping(dbapi_connection)) if spoke else True

    dialect.do_ping = do_ping  # type: ignore[method-assign]


def _new_engine() -> Engine:
    engine = build_engine(get_settings(), os.getpid())
    log.debug("created database engine for pid %s", os.getpid())
    return engine


# Inherited by a forked child: dropped without closing the parent's sockets.
_engine = PerProcess(_new_engine, abandon=lambda engine: engine.dispose(close=False))


def get_engine() -> Engine:
    """This process's engine, created on first use and again in any forked child."""
    return _engine.get()


def dispose_engine() -> None:
    """Close this process's pooled connections (worker child shutdown, tests)."""
    _engine.clear(lambda engine: engine.dispose())


class _ProcessSessionmaker(sessionmaker[Session]):
    """A sessionmaker that binds each new session to the calling process's engine."""

    def __call__(self, **local_kw: Any) -> Session:
        if "bind" not in local_kw:
            if _test_connection is not None:
                local_kw["bind"] = _test_connection
                local_kw["join_transaction_mode"] = "create_savepoint"
            else:
                local_kw["bind"] = get_engine()
        return super().__call__(**local_kw)


SessionLocal = _ProcessSessionmaker(autoflush=False, expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """Yield a session that commits on success, rolls back on any error, and always closes."""
    session = SessionLocal()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_db() -> Iterator[Session]:
    """FastAPI-style dependency with the commit, rollback and close rules of `session_scope`."""
    with session_scope() as session:
        yield session


@contextmanager
def sessions_joined_to(connection: Connection) -> Iterator[None]:
    """Make every new session in this process join `connection` with savepoints (tests)."""
    global _test_connection
    previous, _test_connection = _test_connection, connection
    try:
        yield
    finally:
        _test_connection = previous


@contextmanager
def engine_installed(engine: Engine) -> Iterator[None]:
    """Use `engine` as this process's engine for a while (the pytest plugin's test database)."""
    with _engine.replaced(engine):
        yield
