"""The dashboard's pages and their JSON twins: overview, dead letters filtered and paged,
a dead letter's detail, the outbox and relay now."""

from __future__ import annotations

import json
import time
import uuid

import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.database.dashboard.steps import MakeClient, csrf, dead_letter
from tests.database.producer import Producer
from worker import ledger
from worker.contracts import DEACTIVATE_USER, PUBLISHED_AT_HEADER, RECORD_VIEW
from worker.models import OutboxMessage, TaskFailure
from worker.operations import heartbeat
from worker.operations.deadletters import requeue_id
from worker.producer import viewbuffer


def test_every_page_and_its_json_twin_answer(client: TestClient, db_session: Session) -> None:
    dead_letter(db_session, "only", 42)

    for page, api in [
        ("/", "/api/overview"),
        ("/dead-letters", "/api/dead-letters"),
        ("/dead-letters/only", "/api/dead-letters/only"),
        ("/outbox", "/api/outbox"),
        ("/tasks", "/api/tasks"),
    ]:
        html, data = client.get(page), client.get(api)
        assert html.status_code == 200, page
        assert html.headers["content-type"].startswith("text/html")
        assert data.status_code == 200, api
        assert data.headers["content-type"] == "application/json"
    assert client.get("/dead-letters/nope").status_code == 404
    assert client.get("/api/dead-letters/nope").json() == {
        "error": "no dead letter with task id 'nope'"
    }
    assert client.get("/dead-letters?page=0").status_code == 422


def test_dead_letters_filtered_by_task_and_error_newest_first_a_page_at_a_time(
    client: TestClient, db_session: Session
) -> None:
    # Given 120 dead letters of record_view, one a minute, and 3 of deactivate_user
    for n in range(120):
        dead_letter(db_session, f"view-{n:03}", n + 1, minutes_ago=n + 1)
    bad = ValueError("user_id: bad")
    for n in range(3):
        dead_letter(db_session, f"user-{n}", "x", name=DEACTIVATE_USER, error=bad, minutes_ago=n)

    # When an operator pages through record_view's, and filters by error class
    first = client.get("/api/dead-letters", params={"task": RECORD_VIEW}).json()
    last = client.get("/api/dead-letters", params={"task": RECORD_VIEW, "page": 3}).json()
    by_error = client.get("/api/dead-letters", params={"error": "ValueError"}).json()
    everything = client.get("/api/dead-letters").json()

    # Then each page is newest first, 50 a page, and says how many match
    assert [row["task_id"] for row in first["dead_letters"]][:3] == [
        "view-000",
        "view-001",
        "view-002",
    ]
    assert len(first["dead_letters"]) == 50
    assert (first["matching"], first["pages"], first["has_next"]) == (120, 3, True)
    assert [row["task_id"] for row in last["dead_letters"]][-1] == "view-119"
    assert (len(last["dead_letters"]), last["has_next"]) == (20, False)
    assert [row["task_id"] for row in by_error["dead_letters"]] == ["user-0", "user-1", "user-2"]
    assert everything["matching"] == 123
    assert everything["task_names"] == [RECORD_VIEW, DEACTIVATE_USER]
    assert set(everything["error_classes"]) == {"NotFound", "ValueError"}
    # And the page's filter keeps its choice
    page = client.get("/dead-letters", params={"task": DEACTIVATE_USER}).text
    assert f'<option value="{DEACTIVATE_USER}" selected>' in page
    assert "view-000" not in page


def test_the_detail_shows_everything_and_what_retry_would_do(
    client: TestClient, db_session: Session
) -> None:
    dead_letter(db_session, "good", 42)
    dead_letter(db_session, "bad", "42")

    good = client.get("/api/dead-letters/good").json()
    bad = client.get("/api/dead-letters/bad").json()
    page = client.get("/dead-letters/good").text

    row = db_session.get(TaskFailure, "good")
    assert row is not None
    assert good["dead_letter"]["args"] == [42]
    assert good["dead_letter"]["error_class"] == "NotFound"
    assert good["retry"] == {"refused": None, "requeue_id": requeue_id(row)}
    assert bad["retry"]["refused"].startswith("would fail again")
    for shown in ("post 42 does not exist", "first failed", "correlation id", requeue_id(row)):
        assert shown in page


def test_the_overview_reads_queues_workers_buffer_outbox_and_ledger(
    client: TestClient, db_session: Session, live_redis_url: str, queue: str
) -> None:
    # Given two messages waiting (the oldest published a minute ago), a worker's heartbeat,
    # 5 buffered views, a pending outbox row, 3 tasks applied and 1 dead-lettered
    broker = redis.Redis.from_url(live_redis_url)
    for age in (60, 1):
        headers = {"id": uuid.uuid4().hex, PUBLISHED_AT_HEADER: time.time() - age}
        broker.lpush(queue, json.dumps({"headers": headers}))
    beat = heartbeat.Beat("w1@host", 10, (queue,), 6, 2, 9540, time.time() - 60, time.time())
    heartbeat.publish(broker, queue, beat)
    viewbuffer.record_views(broker, {7: 5}, queue=queue)
    broker.close()
    db_session.add(OutboxMessage(task_id="o1", task_name=RECORD_VIEW, args=[7]))
    for n in range(3):
        ledger.claim(db_session, f"done-{n}", RECORD_VIEW)
    dead_letter(db_session, "v1", 42)

    overview = client.get("/api/overview").json()

    (waiting,) = overview["queues"]
    assert (waiting["name"], waiting["waiting"], waiting["unacknowledged"]) == (queue, 2, 0)
    assert 59 <= waiting["oldest_age_seconds"] < 120
    assert [(w["node"], w["children"], w["busy"]) for w in overview["workers"]] == [
        ("w1@host", 6, 2)
    ]
    assert overview["view_buffer"] == {"pending_views": 5}
    assert overview["outbox"]["pending"] == 1
    assert overview["dead_letters"] == {"count": 1, "capped": False}
    minutes = overview["throughput"]["minutes"]
    assert len(minutes) == 60
    assert (minutes[-1]["applied"], minutes[-1]["dead_lettered"]) == (3, 1)
    page = client.get("/").text
    assert "w1@host" in page
    assert "<svg" in page


def test_relay_now_publishes_the_pending_outbox(
    make_client: MakeClient, db_session: Session, producer: Producer
) -> None:
    db_session.add(OutboxMessage(task_id="o1", task_name=RECORD_VIEW, args=[7]))
    db_session.flush()
    client = make_client(relay_client=producer.client)

    answer = client.post("/outbox/relay", data={"csrf_token": csrf(client)}, follow_redirects=False)

    assert answer.status_code == 303
    assert [(m.id, m.task, m.args) for m in producer.messages()] == [("o1", RECORD_VIEW, [7])]
    sent = db_session.scalar(select(OutboxMessage.sent_at).where(OutboxMessage.task_id == "o1"))
    assert sent is not None
    assert "published 1, dead-lettered 0" in client.get("/outbox").text
    assert db_session.scalar(text("SELECT count(*) FROM task_outbox WHERE sent_at IS NULL")) == 0
