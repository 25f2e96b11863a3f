"""The guards: CSRF on every action, read-only, basic auth, escaping, no secret shown."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from tests.database.dashboard.steps import MakeClient, Published, csrf, dead_letter, remaining
from tests.database.producer import CANARY


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
