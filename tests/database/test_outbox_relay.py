"""The outbox relay: rows published in order with their task ids, never lost, never twice, by
beat's task or a loop an operator runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import celeryconfig
from tests.database.producer import CANARY, Producer, all_rows, pending_rows, scope_on
from worker.contracts import OUTBOX_RELAY
from worker.db import session_scope
from worker.development.live import PROJECT_ROOT, stack_env, wait_until
from worker.models import OutboxMessage, TaskFailure, User
from worker.operations import relay
from worker.producer.client import TaskClient
from worker.producer.outbox import in_outbox


def test_relay_publishes_in_id_order_with_the_rows_task_ids(
    db_session: Session, producer: Producer
) -> None:
    with session_scope() as session:
        ids = [in_outbox(session).record_view(n) for n in range(1, 8)]

    report = relay.relay(producer.client, batch_size=3)

    queued = producer.messages()
    assert [m.id for m in queued] == ids
    assert [m.kwargs["post_id"] for m in queued] == list(range(1, 8))
    assert (report.sent, report.batches, report.error) == (7, 3, None)
    rows = all_rows(db_session)
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows)
    assert relay.relay(producer.client).sent == 0
    assert len(producer.messages()) == 7


def test_broker_down_leaves_rows_pending_and_a_later_relay_sends_them(
    db_session: Session, producer: Producer, dead_broker_client: TaskClient
) -> None:
    # Given three rows written while Redis is down
    with session_scope() as session:
        ids = [in_outbox(session).deactivate_user(n) for n in (1, 2, 3)]

    # When the relay runs: nothing is published, nothing is lost, the error is kept
    report = relay.relay(dead_broker_client)
    assert report.sent == 0
    assert report.error is not None
    assert "Connection refused" in report.error
    rows = pending_rows(db_session)
    assert [r.task_id for r in rows] == ids
    assert rows[0].attempts == 1
    assert "could not be published" in str(rows[0].last_error)
    assert CANARY not in str(rows[0].last_error)
    with session_scope() as session:
        status = relay.status(session)
    assert (status.pending, status.failing) == (3, 1)
    assert status.last_error == rows[0].last_error

    # When Redis is back, the next run sends them all, in order
    assert relay.relay(producer.client).sent == 3
    assert [m.id for m in producer.messages()] == ids
    assert pending_rows(db_session) == []
    assert [(r.attempts, r.last_error) for r in all_rows(db_session)] == [
        (2, None),
        (1, None),
        (1, None),
    ]


def test_row_that_can_never_be_published_is_dead_lettered_not_blocking(
    db_session: Session, producer: Producer
) -> None:
    # Given a row another service wrote by hand with a broken eta, and a good row after it
    db_session.execute(
        text(
            "INSERT INTO task_outbox (task_id, task_name, kwargs, options) "
            "VALUES ('hand-1', 'tasks.users.deactivate_user', '{\"user_id\": 1}', "
            '\'{"eta": "tomorrow-ish"}\')'
        )
    )
    with session_scope() as session:
        good = in_outbox(session).deactivate_user(2)

    report = relay.relay(producer.client)

    assert (report.sent, report.dead_lettered) == (1, 1)
    assert [m.id for m in producer.messages()] == [good]
    failure = db_session.get(TaskFailure, "hand-1")
    assert failure is not None
    assert (failure.error_class, failure.kwargs) == ("InvalidOutboxRow", {"user_id": 1})
    assert "tomorrow-ish" in failure.error_message
    assert pending_rows(db_session) == []
    assert str(all_rows(db_session)[0].last_error).startswith("dead-lettered")


def test_relay_skips_rows_another_relay_holds(live_db: Engine, producer: Producer) -> None:
    scope = scope_on(live_db)
    with scope() as session:
        ids = [in_outbox(session).record_view(n) for n in range(1, 6)]

    # Given another relay in the middle of publishing the first two rows
    with live_db.connect() as other, other.begin():
        other.execute(
            select(OutboxMessage.id)
            .order_by(OutboxMessage.id)
            .limit(2)
            .with_for_update(skip_locked=True)
        ).all()
        # When this relay runs meanwhile, it takes the other rows without waiting
        assert relay.relay(producer.client, scope=scope).sent == 3
        assert [m.id for m in producer.messages()] == ids[2:]

    # Then the held rows are sent once the other relay lets go, and nothing twice
    assert relay.relay(producer.client, scope=scope).sent == 2
    assert sorted(m.id for m in producer.messages()) == sorted(ids)


def test_two_relays_at_once_publish_every_row_exactly_once(
    live_db: Engine, producer: Producer
) -> None:
    scope = scope_on(live_db)
    with scope() as session:
        ids = [in_outbox(session).record_view(n) for n in range(1, 301)]

    start = threading.Barrier(2)
    reports: list[relay.RelayReport] = []

    def run() -> None:
        start.wait()
        reports.append(relay.relay(producer.client, batch_size=10, scope=scope))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    published = [m.id for m in producer.messages()]
    assert sorted(published) == sorted(ids)
    assert len(set(published)) == 300
    assert sum(r.sent for r in reports) == 300
    with Session(live_db) as session:
        assert pending_rows(session) == []
        assert set(session.scalars(select(OutboxMessage.attempts))) == {1}


def test_beat_runs_the_relay_task_every_few_seconds(eager_tasks: Celery) -> None:
    entries = [e for e in celeryconfig.beat_schedule.values() if e["task"] == OUTBOX_RELAY]
    assert len(entries) == 1
    assert entries[0]["schedule"].total_seconds() <= 5
    assert OUTBOX_RELAY in eager_tasks.tasks


def test_relay_task_in_eager_mode_applies_the_outbox_tasks(
    eager_tasks: Celery, db_session: Session, make_user: Callable[..., User]
) -> None:
    user = make_user()
    with session_scope() as session:
        in_outbox(session).deactivate_user(user.id)
    assert db_session.scalar(select(User.is_active).where(User.id == user.id)) is True

    assert eager_tasks.tasks[OUTBOX_RELAY].delay().get() == 1

    assert db_session.scalar(select(User.is_active).where(User.id == user.id)) is False
    assert pending_rows(db_session) == []


def test_prune_removes_only_old_sent_rows(db_session: Session, producer: Producer) -> None:
    with session_scope() as session:
        in_outbox(session).record_view(1)
        in_outbox(session).record_view(2)
    relay.relay(producer.client)
    with session_scope() as session:
        in_outbox(session).record_view(3)
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.sent_at.is_not(None))
            .values(sent_at=func.now() - timedelta(days=10))
        )
        first = session.scalar(select(func.min(OutboxMessage.id)))
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id == first).values(sent_at=func.now())
        )
        removed = relay.prune_sent(session, timedelta(days=7))

    assert removed == 1
    assert [r.kwargs["post_id"] for r in all_rows(db_session)] == [1, 3]


def test_status_of_an_empty_outbox(db_session: Session) -> None:
    with session_scope() as session:
        status = relay.status(session)
    assert (status.pending, status.oldest_pending_seconds, status.failing) == (0, None, 0)
    assert status.last_error is None


def test_relay_loop_sends_rows_as_they_arrive_and_stops_on_sigterm(
    committed_db_url: URL, live_db: Engine, producer: Producer
) -> None:
    env = {**stack_env(committed_db_url, producer.redis_url), "TASK_QUEUE": producer.queue}
    loop = subprocess.Popen(
        [sys.executable, "-m", "worker", "-v", "outbox", "relay", "--loop", "--interval", "0.2"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ids = []
        for n in range(1, 4):
            with Session(live_db) as session, session.begin():
                ids.append(in_outbox(session).record_view(n))
            wait_until(
                lambda n=n: len(producer.messages()) == n, timeout=30, what=f"row {n} relayed"
            )
    finally:
        loop.send_signal(signal.SIGTERM)
        output, _ = loop.communicate(timeout=30)
    assert loop.returncode == 0, output
    assert [m.id for m in producer.messages()] == ids
    with Session(live_db) as session:
        pending = select(func.count()).select_from(OutboxMessage)
        assert session.scalar(pending.where(OutboxMessage.sent_at.is_(None))) == 0
