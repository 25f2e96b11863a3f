"""The runtime role: every task runs with it, and nothing else is allowed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from tests.reliability.helpers import add_posts, failure, scalar, views
from worker import db
from worker.cli import main
from worker.contracts import (
    DEACTIVATE_DORMANT_USERS,
    DEACTIVATE_USER,
    PRUNE_PROCESSED_TASKS,
    RECORD_VIEW,
)
from worker.errors import NotFound
from worker.roles import RoleError, check_role_name
from worker.testing import TEST_RUNTIME_ROLE, as_runtime_role


@pytest.fixture
def runtime_engine(committed_db_url: URL) -> Iterator[Engine]:
    """An engine that logs in as the test runtime role; tasks in this process use it."""
    engine = create_engine(as_runtime_role(committed_db_url), poolclass=NullPool)
    with db.engine_installed(engine):
        yield engine
    engine.dispose()


@pytest.fixture
def owner(committed_db_url: URL) -> Iterator[Engine]:
    engine = create_engine(committed_db_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def test_every_task_runs_as_the_runtime_role(
    eager_tasks: Celery, runtime_engine: Engine, owner: Engine
) -> None:
    # Given a post, an active user and a dormant one, created by the owner
    (post,) = add_posts(owner, 1)
    with owner.begin() as connection:
        active, _dormant = connection.scalars(
            text(
                "INSERT INTO users (email, name, password_hash, last_seen_at) VALUES "
                "('a@example.test', 'A', 'x', now()), "
                "('d@example.test', 'D', 'x', now() - interval '2 years') RETURNING id"
            )
        ).all()
        connection.execute(
            text(
                "INSERT INTO processed_tasks (task_id, task_name, finished_at) "
                "VALUES ('old', 'x', now() - interval '30 days')"
            )
        )
    assert scalar(runtime_engine, "SELECT current_user") == TEST_RUNTIME_ROLE

    # When every task runs as the runtime role, the failure paths included (by the worker
    # app's registry: a producer app made current elsewhere must not take the calls)
    record_view, deactivate_user = (
        eager_tasks.tasks[RECORD_VIEW],
        eager_tasks.tasks[DEACTIVATE_USER],
    )
    deactivate_dormant_users = eager_tasks.tasks[DEACTIVATE_DORMANT_USERS]
    prune_processed_tasks = eager_tasks.tasks[PRUNE_PROCESSED_TASKS]
    assert record_view.apply_async(args=[post], task_id="view").get() == 1
    assert record_view.apply_async(args=[post], task_id="view").get() is None  # duplicate
    assert deactivate_user.delay(active).get() is True
    assert deactivate_user.delay(active).get() is False
    with pytest.raises(NotFound):
        deactivate_user.apply_async(args=[987_654], task_id="no-such-user")
    assert deactivate_dormant_users.delay(inactive_days=365).get() == 1
    assert prune_processed_tasks.delay().get() == 1

    # Then every effect is there
    assert views(owner, post) == 1
    assert scalar(owner, "SELECT count(*) FROM users WHERE NOT is_active") == 2
    assert failure(owner, "no-such-user") is not None
    assert scalar(owner, "SELECT count(*) FROM processed_tasks WHERE task_id = 'old'") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE stolen (id int)",
        "SELECT body FROM comments",
        "SELECT title FROM posts",
        "SELECT * FROM alembic_version",
        "DELETE FROM posts",
        "UPDATE users SET password_hash = 'x'",
        "INSERT INTO task_outbox (task_id, task_name) VALUES ('x', 'y')",
    ],
)
def test_the_runtime_role_can_do_nothing_else(runtime_engine: Engine, statement: str) -> None:
    with runtime_engine.connect() as connection, pytest.raises(ProgrammingError) as error:
        connection.execute(text(statement))
    assert "permission denied" in str(error.value.orig)


def test_create_runtime_role_command_creates_then_updates(owner: Engine) -> None:
    # Given a role name of this test's own (role names are cluster-wide)
    name = f"worker_test_cli_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        with db.engine_installed(owner):
            # When the owner runs the command twice
            first = runner.invoke(main, ["db", "create-runtime-role", name])
            second = runner.invoke(main, ["db", "create-runtime-role", name])
            bad = runner.invoke(main, ["db", "create-runtime-role", "x; DROP TABLE posts"])
            unset = runner.invoke(
                main, ["db", "create-runtime-role", name, "--password-env", "NO_SUCH_VARIABLE_X"]
            )

        # Then it creates the role, then updates it, with the grants listed
        assert first.exit_code == 0, first.output
        assert first.output.startswith(f"created role {name} in database ")
        assert "  task_failures: SELECT, INSERT, UPDATE, DELETE" in first.output
        assert second.output.startswith(f"updated role {name}")
        assert bad.exit_code == 1
        assert "lower-case letters" in bad.output
        assert unset.exit_code == 1
        assert "NO_SUCH_VARIABLE_X is not set" in unset.output
        privileges = scalar(
            owner,
            "SELECT has_table_privilege(:r, 'processed_tasks', 'INSERT')::int"
            " + has_table_privilege(:r, 'comments', 'SELECT')::int * 10"
            " + has_schema_privilege(:r, 'public', 'CREATE')::int * 100",
            r=name,
        )
        assert privileges == 1
    finally:
        with owner.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{name}"'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))


@pytest.mark.parametrize("name", ["", "Robert", "1abc", "a-b", "x" * 64, 'a"b'])
def test_role_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(RoleError):
        check_role_name(name)
