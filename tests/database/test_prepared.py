"""record_view's statement is prepared once per connection; a lost one costs a retry, not a view.

Like the round-trip tests, these use the worker's own engine on a committed database: the
server-side state of a pooled connection is what is under test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tests.steps import add_posts, views
from worker import db
from worker.config import Settings
from worker.domain import posts
from worker.errors import NotFound
from worker.runtime.retries import is_transient

STATEMENT = "worker_record_view_once"


def view(post: int, task_id: str) -> int | None:
    with db.session_scope() as session:
        return posts.record_view_once(session, post, task_id, "t")


def executions_on_pooled_connection() -> tuple[int, int]:
    """(backend pid, runs of the prepared statement) as the pooled connection's session sees it."""
    with db.session_scope() as session:
        runs = session.scalar(
            text(
                "SELECT coalesce(sum(generic_plans + custom_plans), 0) "
                "FROM pg_prepared_statements WHERE name = :name"
            ),
            {"name": STATEMENT},
        )
        return int(session.scalar(text("SELECT pg_backend_pid()"))), int(runs)


def test_prepared_once_and_run_for_every_view(worker_engine: Engine, live_db: Engine) -> None:
    (post,) = add_posts(live_db, 1)

    counts = [view(post, f"task-{n}") for n in range(5)]

    assert counts == [1, 2, 3, 4, 5]
    assert executions_on_pooled_connection()[1] == 5


def test_a_rolled_back_task_keeps_the_statement_prepared(
    worker_engine: Engine, live_db: Engine
) -> None:
    # Given a connection whose first use of the statement ends in a rollback (missing post)
    (post,) = add_posts(live_db, 1)
    with pytest.raises(NotFound):
        view(10**12, "missing")

    # When the next task runs on the same connection, the statement is still there
    assert view(post, "present") == 1
    assert executions_on_pooled_connection()[1] == 2


def _deallocate_on_server() -> None:
    with db.session_scope() as session:
        session.connection().exec_driver_sql(f"DEALLOCATE {STATEMENT}")


def _forget_in_pool() -> None:
    with db.session_scope() as session:
        session.connection().connection.info.clear()


@pytest.mark.parametrize(
    "lose", [_deallocate_on_server, _forget_in_pool], ids=["server-lost-it", "pool-forgot-it"]
)
def test_a_prepared_statement_out_of_step_costs_one_retry(
    worker_engine: Engine, live_db: Engine, lose: Callable[[], None]
) -> None:
    # Given a prepared statement that the server and the pool disagree about
    (post,) = add_posts(live_db, 1)
    assert view(post, "first") == 1
    backend, _ = executions_on_pooled_connection()
    lose()

    # When the next task runs, it fails with an error the task retries, changing nothing
    with pytest.raises(DBAPIError) as failure:
        view(post, "second")
    assert is_transient(failure.value)
    assert views(live_db, post) == 1

    # Then the retry runs on a new connection and counts the view once
    assert view(post, "second") == 2
    new_backend, runs = executions_on_pooled_connection()
    assert new_backend != backend
    assert runs == 1


@pytest.fixture
def prepared_statements_off(committed_db_url: URL) -> Iterator[Engine]:
    """The worker's engine as DB_PREPARED_STATEMENTS=false builds it."""
    settings = Settings(
        database_url=SecretStr(committed_db_url.render_as_string(hide_password=False)),
        db_prepared_statements=False,
    )
    engine = db.build_engine(settings, os.getpid())
    with db.engine_installed(engine):
        yield engine
    engine.dispose()


def test_with_prepared_statements_off_it_runs_plain_sql(
    prepared_statements_off: Engine, live_db: Engine
) -> None:
    (post,) = add_posts(live_db, 1)

    assert [view(post, f"task-{n}") for n in range(3)] == [1, 2, 3]
    assert view(post, "task-0") is None  # still exactly once per task id

    with db.session_scope() as session:
        prepared = session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
    assert prepared == 0
