"""Which database errors are worth a retry: real errors raised by a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from worker.errors import NotFound
from worker.runtime.retries import is_transient


def raised_by(engine: Engine, *statements: str) -> DBAPIError:
    *setup, failing = statements
    with engine.connect() as connection:
        for statement in setup:
            connection.execute(text(statement))
        with pytest.raises(DBAPIError) as caught:
            connection.execute(text(failing))
    return caught.value


def test_statement_timeout_and_deadlock_class_errors_are_transient(db_engine: Engine) -> None:
    timeout = raised_by(db_engine, "SET statement_timeout = 10", "SELECT pg_sleep(1)")
    assert is_transient(timeout)
    serialization = raised_by(
        db_engine,
        "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$",
    )
    assert is_transient(serialization)


def test_bugs_and_bad_data_are_permanent(db_engine: Engine) -> None:
    assert not is_transient(raised_by(db_engine, "SELECT * FROM no_such_table"))
    assert not is_transient(raised_by(db_engine, "SELECT 1 / 0"))
    assert not is_transient(NotFound("post", 1))
    assert not is_transient(ValueError("bad"))
