"""The runtime role: every task runs with it, and nothing else is allowed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, ProgrammingError
from sqlalchemy.orm import Session

from tests.steps import add_posts, failure, processed_ids, scalar, views
from worker import db, ledger
from worker.contracts import (
    DEACTIVATE_DORMANT_USERS,
    DEACTIVATE_USER,
    OUTBOX_RELAY,
    PRUNE_PROCESSED_TASKS,
    RECORD_REFUSAL,
    RECORD_VIEW,
)
from worker.development.databases import TEST_RUNTIME_ROLE, as_runtime_role, unpooled
from worker.errors import NotFound
from worker.operations import roles
from worker.operations.cli import main


@pytest.fixture
def runtime_engine(committed_db_url: URL, owner: Engine) -> Iterator[Engine]:
    """An engine that logs in as the test runtime role; tasks in this process use it.

    The database is left as create-runtime-role leaves it: a copy of the template has the
    role's table grants, but database privileges are not copied, so CONNECT is granted again
    and PUBLIC's default CONNECT and TEMPORARY are revoked.
    """
    assert committed_db_url.database is not None
    with owner.begin() as connection:
        roles.grant_runtime_privileges(connection, TEST_RUNTIME_ROLE)
        roles.revoke_public_access(connection, committed_db_url.database)
    with unpooled(as_runtime_role(committed_db_url)) as engine, db.engine_installed(engine):
        yield engine


@pytest.fixture
def owner(committed_db_url: URL) -> Iterator[Engine]:
    with unpooled(committed_db_url) as engine:
        yield engine


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
        # An outbox row the relay cannot publish: it dead-letters it, with no broker involved
        connection.execute(
            text(
                "INSERT INTO task_outbox (task_id, task_name, options) "
                "VALUES ('unpublishable', 'tasks.posts.record_view', '{\"priority\": 9}')"
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
    relay_outbox, record_refusal = (
        eager_tasks.tasks[OUTBOX_RELAY],
        eager_tasks.tasks[RECORD_REFUSAL],
    )
    assert record_view.apply_async(args=[post], task_id="view").get() == 1
    assert record_view.apply_async(args=[post], task_id="view").get() is None  # duplicate
    assert deactivate_user.delay(active).get() is True
    assert deactivate_user.delay(active).get() is False
    with pytest.raises(NotFound):
        deactivate_user.apply_async(args=[987_654], task_id="no-such-user")
    assert deactivate_dormant_users.delay(inactive_days=365).get() == 1
    assert prune_processed_tasks.delay().get() == 1
    assert relay_outbox.delay().get() == 0
    refusal = {"task_id": "refused", "task_name": RECORD_VIEW}
    record_refusal.delay(**refusal, error_class="MessageTooLarge", reason="too large").get()

    # Then every effect is there
    assert views(owner, post) == 1
    assert scalar(owner, "SELECT count(*) FROM users WHERE NOT is_active") == 2
    assert failure(owner, "no-such-user") is not None
    assert scalar(owner, "SELECT count(*) FROM processed_tasks WHERE task_id = 'old'") == 0
    assert (failure(owner, "unpublishable") or {}).get("error_class") == "InvalidOutboxRow"
    assert scalar(owner, "SELECT attempts FROM task_outbox WHERE sent_at IS NOT NULL") == 1
    assert (failure(owner, "refused") or {}).get("error_class") == "MessageTooLarge"


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE stolen (id int)",
        "CREATE TEMP TABLE stolen (id int)",
        "SELECT body FROM comments",
        "SELECT title FROM posts",
        "SELECT * FROM alembic_version",
        "SELECT password_hash FROM users",
        "SELECT email FROM users",
        "SELECT * FROM users",
        "SELECT ctid FROM users",
        "SELECT * FROM task_failures",
        "DELETE FROM posts",
        "UPDATE users SET password_hash = 'x'",
        "INSERT INTO task_outbox (task_id, task_name) VALUES ('x', 'y')",
        # Aging a claim would let the prune function forget it early
        "UPDATE processed_tasks SET finished_at = now() - interval '1 year'",
        "INSERT INTO processed_tasks (task_id, task_name, finished_at) "
        "VALUES ('x', 'y', now() - interval '1 year')",
    ],
)
def test_the_runtime_role_can_do_nothing_else(runtime_engine: Engine, statement: str) -> None:
    with runtime_engine.connect() as connection, pytest.raises(ProgrammingError) as error:
        connection.execute(text(statement))
    assert "permission denied" in str(error.value.orig)


def denied(engine: Engine, statement: str) -> str:
    """The error of `statement` run as `engine`'s role, which must be a permission error."""
    with engine.connect() as connection, pytest.raises(ProgrammingError) as error:
        connection.execute(text(statement))
    message = str(error.value.orig)
    assert "permission denied" in message
    return message


def test_the_runtime_role_cannot_undo_exactly_once_or_rewrite_dead_letters_and_outbox_rows(
    runtime_engine: Engine, owner: Engine
) -> None:
    # Given a task id applied just now, one applied 30 days ago, a dead letter and an outbox row
    with owner.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO processed_tasks (task_id, task_name, finished_at) VALUES "
                "('recent', 'x', now()), ('old', 'x', now() - interval '30 days')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO task_failures (task_id, task_name, args, error_class, error_message)"
                " VALUES ('dead', 'tasks.posts.record_view', '[7]', 'NotFound', 'no post 7')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO task_outbox (task_id, task_name, args) "
                "VALUES ('queued', 'tasks.posts.record_view', '[7]')"
            )
        )

    # When the runtime role tries to forget the recent id, directly or with a short retention
    denied(runtime_engine, "DELETE FROM processed_tasks WHERE task_id = 'recent'")
    with Session(runtime_engine) as session, pytest.raises(DataError) as refused:
        ledger.prune_processed(session, timedelta(hours=23))
    assert "below the minimum of 1 day" in str(refused.value.orig)

    # And tries to rewrite or delete the dead letter and the outbox row
    for statement in (
        "UPDATE task_failures SET args = '[8]' WHERE task_id = 'dead'",
        "UPDATE task_failures SET attempts = 0",
        "DELETE FROM task_failures WHERE task_id = 'dead'",
        "INSERT INTO task_failures (task_id, task_name, error_class, error_message) "
        "VALUES ('forged', 'tasks.users.deactivate_user', 'E', 'e')",
        "UPDATE task_outbox SET task_name = 'tasks.users.deactivate_user'",
        "UPDATE task_outbox SET args = '[8]'",
        "DELETE FROM task_outbox",
    ):
        denied(runtime_engine, statement)

    # And, through the only ways it has, prunes with the real retention and fails the task again
    with Session(runtime_engine) as session, session.begin():
        removed = ledger.prune_processed(session, timedelta(days=7))
        ledger.record_failure(
            session,
            task_id="dead",
            task_name="tasks.users.deactivate_user",
            args=[8],
            kwargs={"forged": True},
            error="no post 7, again",
            error_class="NotFound",
        )

    # Then only the old id is forgotten, and the dead letter kept what it was called with
    assert removed == 1
    assert processed_ids(owner) == {"recent"}
    dead = failure(owner, "dead")
    assert dead is not None
    assert (dead["task_name"], dead["args"], dead["kwargs"]) == ("tasks.posts.record_view", [7], {})
    assert (dead["attempts"], dead["error_message"]) == (2, "no post 7, again")
    assert scalar(owner, "SELECT task_name || args::text FROM task_outbox") == (
        "tasks.posts.record_view[7]"
    )
    assert scalar(owner, "SELECT count(*) FROM task_outbox") == 1


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
        assert (
            "  users: SELECT (id, is_active, created_at, last_seen_at), "
            "UPDATE (is_active, deactivated_at, updated_at)\n" in first.output
        )
        assert "  prune_processed_tasks(interval): EXECUTE" in first.output
        assert "  task_failures:" not in first.output
        database = owner.url.database
        assert f"PUBLIC may not CONNECT to or create TEMPORARY tables in: {database}\n" in (
            first.output
        )
        assert second.output.startswith(f"updated role {name}")
        assert bad.exit_code == 1
        assert "lower-case letters" in bad.output
        assert unset.exit_code == 1
        assert "NO_SUCH_VARIABLE_X is not set" in unset.output
        privileges = scalar(
            owner,
            "SELECT has_any_column_privilege(:r, 'processed_tasks', 'INSERT')::int"
            " + has_table_privilege(:r, 'comments', 'SELECT')::int * 10"
            " + has_schema_privilege(:r, 'public', 'CREATE')::int * 100"
            " + has_table_privilege(:r, 'processed_tasks', 'DELETE')::int * 1000"
            " + has_database_privilege(:r, current_database(), 'CONNECT')::int * 10000"
            " + has_database_privilege(:r, current_database(), 'TEMPORARY')::int * 100000"
            " + has_database_privilege('public', current_database(), 'CONNECT')::int * 1000000",
            r=name,
        )
        assert privileges == 10001
    finally:
        with owner.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{name}"'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
