"""The dashboard's routes, through FastAPI's TestClient on the test database and Redis.

Its pages and JSON twins, the filters and pages of dead letters, retry and purge (the CLI's
rules), the outbox relay, and the guards: basic auth, CSRF, read-only, escaping, secrets.
A live worker and a real browser: tests/live/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from tests.database.producer import CANARY, Producer
from worker import ledger
from worker.config import Settings
from worker.contracts import DEACTIVATE_USER, PUBLISHED_AT_HEADER, RECORD_VIEW
from worker.development.live import forget_queue
from worker.errors import NotFound
from worker.models import OutboxMessage, ProcessedTask, TaskFailure
from worker.operations import heartbeat
from worker.operations.dashboard.app import create_app
from worker.operations.dashboard.auth import CSRF_COOKIE
from worker.operations.deadletters import requeue_id
from worker.producer import viewbuffer

Published = list[tuple[str, list[Any], dict[str, Any], str]]
MakeClient = Callable[..., TestClient]


@pytest.fixture
def queue(live_redis_url: str) -> Iterator[str]:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    yield name
    forget_queue(live_redis_url, name)


@pytest.fixture
def published() -> Published:
    return []


@pytest.fixture
def make_client(
    db_session: Session, live_redis_url: str, queue: str, published: Published
) -> Iterator[MakeClient]:
    """A TestClient of a dashboard on the test's transaction and queue, recording what it
    requeues; keyword arguments go to Settings, `read_only` and `relay_client` to the app."""
    clients: list[TestClient] = []

    def make(read_only: bool = False, relay_client: Any = None, **settings: Any) -> TestClient:
        current = Settings(redis_url=SecretStr(live_redis_url), task_queue=queue, **settings)
        app = create_app(
            current,
            read_only=read_only,
            publish=lambda *message: published.append(message),
            relay_client=relay_client,
        )
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.app.state.dashboard.broker.close()  # type: ignore[attr-defined]
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def dead_letter(
    session: Session,
    task_id: str,
    *args: object,
    name: str = RECORD_VIEW,
    error: Exception | None = None,
    minutes_ago: int = 0,
) -> None:
    ledger.record_failure(
        session,
        task_id=task_id,
        task_name=name,
        args=list(args),
        kwargs={},
        error=error or NotFound("post", 42),
    )
    if minutes_ago:
        session.execute(
            update(TaskFailure)
            .where(TaskFailure.task_id == task_id)
            .values(last_failed_at=func.now() - timedelta(minutes=minutes_ago))
        )
    session.flush()


def remaining(session: Session) -> set[str]:
    return set(session.scalars(select(TaskFailure.task_id)))


def csrf(client: TestClient) -> str:
    """The token of the client's cookie, as a page's forms carry it."""
    token = client.get("/api/csrf").json()["csrf_token"]
    assert client.cookies.get(CSRF_COOKIE) == token
    return str(token)


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


def test_retry_one_requeues_it_once_through_the_cli_functions(
    client: TestClient, db_session: Session, published: Published
) -> None:
    dead_letter(db_session, "v1", 42)
    row = db_session.get(TaskFailure, "v1")
    assert row is not None
    new_id = requeue_id(row)

    # When an operator presses Retry on its page
    answer = client.post(
        "/dead-letters/v1/retry",
        data={"csrf_token": csrf(client), "task": RECORD_VIEW},
        follow_redirects=False,
    )

    # Then it is published under the id the CLI would use, gone from the list, claimed
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dead-letters?task=tasks.posts.record_view"
    assert published == [(RECORD_VIEW, [42], {}, new_id)]
    assert remaining(db_session) == set()
    assert db_session.get(ProcessedTask, "v1") is not None
    listed = client.get(answer.headers["location"]).text
    assert f"requeued v1 as {new_id}" in listed
    assert "no dead letters" in listed
    # And retrying it again finds nothing
    again = client.post("/api/dead-letters/v1/retry", headers={"X-CSRF-Token": csrf(client)})
    assert again.json()["outcomes"][0]["outcome"] == "missing"
    assert len(published) == 1


def test_retry_all_matching_refuses_rows_whose_arguments_would_fail_again(
    client: TestClient, db_session: Session, published: Published
) -> None:
    dead_letter(db_session, "ok-1", 1)
    dead_letter(db_session, "ok-2", 2)
    dead_letter(db_session, "string", "3")
    dead_letter(db_session, "other", 4, name=DEACTIVATE_USER)

    answer = client.post(
        "/api/dead-letters/retry",
        json={"matching": True, "task": RECORD_VIEW},
        headers={"X-CSRF-Token": csrf(client)},
    )

    body = answer.json()
    assert answer.status_code == 200
    assert (
        body["summary"]
        == "requeued 2, skipped 0 (already applied), refused 1 (1 invalid arguments)"
    )
    assert sorted(args for _, args, _, _ in published) == [[1], [2]]
    assert remaining(db_session) == {"string", "other"}


def test_retry_selected_from_the_list_form(
    client: TestClient, db_session: Session, published: Published
) -> None:
    for task_id, post in (("a", 1), ("b", 2), ("c", 3)):
        dead_letter(db_session, task_id, post)

    answer = client.post(
        "/dead-letters/retry",
        data={"csrf_token": csrf(client), "task_id": ["a", "c"]},
        follow_redirects=False,
    )

    assert answer.status_code == 303
    assert remaining(db_session) == {"b"}
    assert sorted(args for _, args, _, _ in published) == [[1], [3]]


def test_purge_needs_confirmation(client: TestClient, db_session: Session) -> None:
    for task_id in ("p1", "p2", "keep"):
        dead_letter(
            db_session, task_id, 1, name=DEACTIVATE_USER if task_id == "keep" else RECORD_VIEW
        )
    token = csrf(client)

    # When purge is pressed, a page asks first and nothing is deleted yet
    asked = client.post(
        "/dead-letters/purge", data={"csrf_token": token, "matching": "1", "task": RECORD_VIEW}
    )
    assert asked.status_code == 200
    assert "Purge dead letters?" in asked.text
    assert "deletes 2 dead letters" in asked.text
    assert remaining(db_session) == {"p1", "p2", "keep"}
    unconfirmed = client.post(
        "/api/dead-letters/purge", json={"task_ids": ["p1"]}, headers={"X-CSRF-Token": token}
    )
    assert unconfirmed.status_code == 400
    assert remaining(db_session) == {"p1", "p2", "keep"}

    # Then confirming deletes exactly what was asked
    done = client.post(
        "/dead-letters/purge",
        data={"csrf_token": token, "matching": "1", "task": RECORD_VIEW, "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert remaining(db_session) == {"keep"}
    one = client.post(
        "/api/dead-letters/purge",
        json={"task_ids": ["keep"], "confirm": True},
        headers={"X-CSRF-Token": token},
    )
    assert one.json() == {"purged": 1}
    assert remaining(db_session) == set()


@pytest.mark.parametrize("token", [None, "", "forged.0000", "other"])
def test_a_post_without_the_csrf_token_is_refused(
    client: TestClient, db_session: Session, published: Published, token: str | None
) -> None:
    dead_letter(db_session, "v1", 42)
    good = csrf(client)
    if token == "other":  # a token this process signed, but not the cookie's
        token = client.app.state.dashboard.csrf.issue()  # type: ignore[attr-defined]
    form = {} if token is None else {"csrf_token": token}

    answers = [
        client.post("/dead-letters/v1/retry", data=form, follow_redirects=False),
        client.post("/dead-letters/purge", data={**form, "task_id": "v1", "confirm": "yes"}),
        client.post("/api/outbox/relay", headers={} if token is None else {"X-CSRF-Token": token}),
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 403]
    assert "CSRF token" in answers[0].text
    assert remaining(db_session) == {"v1"}
    assert published == []
    assert good != token


def test_read_only_hides_the_actions_and_refuses_them(
    make_client: MakeClient, db_session: Session, published: Published
) -> None:
    dead_letter(db_session, "v1", 42)
    client = make_client(read_only=True)
    token = csrf(client)

    pages = [client.get(path).text for path in ("/dead-letters", "/dead-letters/v1", "/outbox")]
    refused = client.post("/dead-letters/v1/retry", data={"csrf_token": token})
    api = client.post("/api/dead-letters/v1/retry", headers={"X-CSRF-Token": token})

    assert all('<form method="post"' not in page for page in pages)
    assert all("Retry" not in page and "Relay now" not in page for page in pages)
    assert "read-only" in pages[0]
    assert (refused.status_code, api.status_code) == (403, 403)
    assert "read-only" in api.json()["error"]
    assert remaining(db_session) == {"v1"}
    assert published == []


def test_basic_auth_when_a_password_is_set(make_client: MakeClient) -> None:
    client = make_client(dashboard_password=SecretStr("s3cret"), dashboard_user="ops")

    missing = client.get("/")
    wrong = client.get("/api/overview", auth=("ops", "nope"))
    wrong_user = client.get("/api/overview", auth=("root", "s3cret"))
    right = client.get("/", auth=("ops", "s3cret"))

    assert missing.status_code == wrong.status_code == wrong_user.status_code == 401
    assert missing.headers["www-authenticate"].startswith('Basic realm="worker dashboard"')
    assert client.get("/static/dashboard.css").status_code == 401
    assert right.status_code == 200


def test_a_script_argument_renders_as_text(client: TestClient, db_session: Session) -> None:
    attack = "<script>document.title='owned'</script>"
    dead_letter(db_session, "xss", attack, error=ValueError(f"bad {attack}"))

    pages = [client.get(path) for path in ("/dead-letters", "/dead-letters/xss")]

    for page in pages:
        assert "<script>document" not in page.text
        assert "&lt;script&gt;document.title=" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/api/dead-letters/xss").json()["dead_letter"]["args"] == [attack]


def test_no_secret_of_the_settings_is_ever_shown(
    make_client: MakeClient, db_session: Session, live_redis_url: str
) -> None:
    dead_letter(db_session, "v1", 42)
    database = f"postgresql+psycopg2://owner:{CANARY}-db@127.0.0.1:5432/x"
    client = make_client(
        dashboard_password=SecretStr(f"{CANARY}-dash"), database_url=SecretStr(database)
    )
    auth = ("operator", f"{CANARY}-dash")
    paths = ["/", "/dead-letters", "/dead-letters/v1", "/outbox", "/tasks", "/nope"]

    answers = [client.get(path, auth=auth) for path in paths]
    answers += [
        client.get("/api" + (path if path != "/" else "/overview"), auth=auth) for path in paths
    ]

    for answer in answers:
        assert CANARY not in answer.text, answer.url
        assert CANARY not in json.dumps(dict(answer.headers)), answer.url


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
