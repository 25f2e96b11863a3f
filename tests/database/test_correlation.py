"""Correlation ids on the producer side and in dead letters: every way a task leaves an API
carries the id of the request that caused it, and a dead letter keeps it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from alembic import command
from alembic.config import Config
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.database.producer import Producer, add_post
from worker import ledger
from worker.client import TaskClient, correlation_id, current_correlation_id, tasks
from worker.config import get_settings
from worker.db import session_scope
from worker.development.databases import (
    create_database,
    drop_database,
    migrations_dir,
    unpooled,
)
from worker.enqueue import after_commit
from worker.errors import NotFound
from worker.models import OutboxMessage, TaskFailure
from worker.operations import relay
from worker.operations.cli import main
from worker.outbox import in_outbox


def sent_headers(producer: Producer) -> dict[str, str | None]:
    """The correlation id header of each message on the producer's queue, by task id."""
    connection = redis.Redis.from_url(producer.redis_url)
    try:
        raw = connection.lrange(producer.queue, 0, -1)
    finally:
        connection.close()
    headers = [json.loads(item)["headers"] for item in raw]
    return {h["id"]: h.get("correlation_id") for h in headers}


def test_the_typed_client_sends_the_correlation_id_of_its_context(producer: Producer) -> None:
    with correlation_id("req-1"):
        inside = producer.client.record_view(1)
        assert current_correlation_id() == "req-1"
    outside = producer.client.record_view(2)

    assert sent_headers(producer) == {inside: "req-1", outside: None}
    assert current_correlation_id() is None


def test_a_correlation_id_must_be_short_printable_text() -> None:
    for bad in ("", "has space", "x" * 201, "tab\there", "é"):
        with pytest.raises(ValueError, match="correlation id"):
            correlation_id(bad).__enter__()
    assert current_correlation_id() is None


def test_after_commit_sends_the_correlation_id_of_the_call_not_of_the_commit(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session:
        _, post_id = add_post(session)
        with correlation_id("req-2"):
            task_id = after_commit(session, producer.client).record_view(post_id)
        # the commit (and the publish) happens after the request's block has ended

    assert sent_headers(producer) == {task_id: "req-2"}


def test_the_outbox_keeps_the_correlation_id_with_the_row_and_the_relay_sends_it(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session, correlation_id("req-3"):
        task_id = in_outbox(session).deactivate_user(1)
    with session_scope() as session:
        plain = in_outbox(session).deactivate_user(2)
    rows = {row.task_id: row.options for row in db_session.scalars(select(OutboxMessage))}

    report = relay.relay(producer.client)

    assert rows == {task_id: {"correlation_id": "req-3"}, plain: {}}
    assert report.sent == 2
    assert sent_headers(producer) == {task_id: "req-3", plain: None}


def test_an_outbox_row_whose_correlation_id_is_no_id_is_dead_lettered(
    db_session: Session, producer: Producer
) -> None:
    db_session.execute(
        text(
            "INSERT INTO task_outbox (task_id, task_name, kwargs, options) VALUES "
            "('hand-1', 'tasks.users.deactivate_user', '{\"user_id\": 1}', "
            "'{\"correlation_id\": 42}')"
        )
    )

    report = relay.relay(producer.client)

    assert (report.sent, report.dead_lettered) == (0, 1)
    failure = db_session.get(TaskFailure, "hand-1")
    assert failure is not None
    assert "correlation_id is not a correlation id: 42" in failure.error_message
    assert failure.correlation_id is None


def test_a_task_the_broker_refused_at_commit_is_dead_lettered_with_its_correlation_id(
    db_session: Session, dead_broker_client: TaskClient
) -> None:
    with session_scope() as session:
        user_id, _ = add_post(session)
        with correlation_id("req-4"):
            task_id = after_commit(session, dead_broker_client).deactivate_user(user_id)

    failure = db_session.get(TaskFailure, task_id)
    assert failure is not None
    assert (failure.error_class, failure.correlation_id) == ("PublishError", "req-4")


def test_a_dead_letter_keeps_the_first_correlation_id_it_was_given(db_session: Session) -> None:
    for correlation in (None, "req-5", "req-6", None):
        ledger.record_failure(
            db_session,
            task_id="t-1",
            task_name="tasks.posts.record_view",
            args=[],
            kwargs={"post_id": 1},
            error=NotFound("post", 1),
            correlation_id=correlation,
        )
    failure = db_session.get(TaskFailure, "t-1")
    assert failure is not None
    db_session.refresh(failure)

    assert (failure.attempts, failure.correlation_id) == (4, "req-5")


def test_failures_show_prints_the_correlation_id(db_session: Session) -> None:
    for task_id, correlation in (("with", "req-7"), ("without", None)):
        ledger.record_failure(
            db_session,
            task_id=task_id,
            task_name="tasks.posts.record_view",
            args=[],
            kwargs={"post_id": 1},
            error=NotFound("post", 1),
            correlation_id=correlation,
        )
    db_session.flush()

    shown = CliRunner().invoke(main, ["failures", "show", "with"])
    unknown = CliRunner().invoke(main, ["failures", "show", "without"])

    assert shown.exit_code == 0, shown.output
    assert "correlation:  req-7" in shown.output
    assert "correlation:  (none sent)" in unknown.output


def test_an_eager_task_logs_and_dead_letters_under_the_api_correlation_id(
    eager_tasks: Celery, db_session: Session, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    # When an API request with a correlation id runs a task inline that fails for good
    task_id = "eager-missing-post"
    with correlation_id("req-eager"), pytest.raises(NotFound):
        tasks.record_view(999_999, task_id=task_id)

    # Then the task's lines and its dead letter carry the request's id
    lines = json_logs()
    about_it = [line for line in lines if line.get("task_id") == task_id]
    assert any("failed for good" in line["message"] for line in about_it)
    assert {line["correlation_id"] for line in about_it} == {"req-eager"}
    failure = db_session.get(TaskFailure, task_id)
    assert failure is not None
    assert failure.correlation_id == "req-eager"


def _alembic(url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture
def database_at_0003(db_template: tuple[URL, str]) -> Iterator[URL]:
    admin_url = get_settings().sqlalchemy_url
    name = f"test_worker_corr_{uuid.uuid4().hex[:10]}"
    url = create_database(admin_url, name)
    try:
        command.upgrade(_alembic(url), "0003")
        yield url
    finally:
        drop_database(admin_url, name)


def _can_execute(url: URL, role: str, signature: str) -> Any:
    with unpooled(url) as engine, engine.connect() as connection:
        query = "SELECT has_function_privilege(:role, :signature, 'EXECUTE')"
        return connection.scalar(text(query), {"role": role, "signature": signature})


def test_migration_0004_lets_every_role_that_dead_lettered_keep_dead_lettering(
    database_at_0003: URL,
) -> None:
    old = "public.record_task_failure(text, text, jsonb, jsonb, text, text, integer)"
    new = "public.record_task_failure(text, text, jsonb, jsonb, text, text, integer, text)"
    role = f"corr_runtime_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_at_0003, poolclass=NullPool)
    try:
        # Given a runtime role that may execute 0003's function, and one that may not
        with engine.begin() as connection:
            connection.execute(text(f"CREATE ROLE {role}"))
            connection.execute(text(f"GRANT EXECUTE ON FUNCTION {old} TO {role}"))
        assert _can_execute(database_at_0003, role, old)

        # When 0004 runs, then back down to 0003
        command.upgrade(_alembic(database_at_0003), "0004")
        upgraded = _can_execute(database_at_0003, role, new)
        public = _can_execute(database_at_0003, "public", new)
        # a worker still on the seven-argument call keeps dead-lettering
        with engine.begin() as connection:
            connection.execute(
                text(
                    "SELECT record_task_failure('t', 'n', '[]', '{}', 'E', 'm', 1); "
                    "SELECT record_task_failure('t', 'n', '[]', '{}', 'E', 'm', 1, 'req-8')"
                )
            )
            kept = connection.execute(
                text("SELECT attempts, correlation_id FROM task_failures")
            ).one()
        command.downgrade(_alembic(database_at_0003), "0003")
        downgraded = _can_execute(database_at_0003, role, old)
    finally:
        with engine.begin() as connection:
            if connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}):
                connection.execute(text(f"DROP OWNED BY {role}"))  # its grants in this database
                connection.execute(text(f"DROP ROLE {role}"))
        engine.dispose()

    # Then the role may execute the new function (PUBLIC may not), and the old one again
    assert (upgraded, public, downgraded) == (True, False, True)
    assert tuple(kept) == (2, "req-8")


def test_the_header_is_what_a_raw_producer_sets_too(producer: Producer) -> None:
    app = producer.client.app
    task_id = app.send_task(
        "tasks.posts.record_view",
        kwargs={"post_id": 1},
        queue=producer.queue,
        headers={"correlation_id": "req-raw"},
    ).id

    assert sent_headers(producer) == {task_id: "req-raw"}
    connection = redis.Redis.from_url(producer.redis_url)
    try:
        raw = connection.lindex(producer.queue, 0)
    finally:
        connection.close()
    assert raw is not None
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert body[1] == {"post_id": 1}  # the header rides beside the arguments, not in them
