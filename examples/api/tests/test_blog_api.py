"""The blog API, tested the way an API team would: TestClient and the worker's pytest plugin."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.models import OutboxMessage, Post, ProcessedTask, User
from worker.operations.relay import relay


def new_user(client: TestClient, email: str = "ada@example.test") -> dict[str, Any]:
    response = client.post(
        "/users", json={"email": email, "name": "Ada", "password": "correct horse"}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def new_post(client: TestClient, author_id: int, slug: str = "hello-world") -> dict[str, Any]:
    response = client.post(
        "/posts", json={"author_id": author_id, "title": "Hello", "body": "First!", "slug": slug}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_user_stores_a_hash_never_the_password(
    client: TestClient, db_session: Session
) -> None:
    user = new_user(client, "Grace@Example.test")

    assert user == {"id": user["id"], "email": "grace@example.test", "name": "Ada",
                    "is_active": True}  # fmt: skip
    stored = db_session.get(User, user["id"])
    assert stored is not None
    assert stored.password_hash.startswith("scrypt$")
    assert "correct horse" not in stored.password_hash


def test_duplicate_email_is_a_conflict(client: TestClient, db_session: Session) -> None:
    new_user(client)
    response = client.post(
        "/users", json={"email": "ada@example.test", "name": "Other", "password": "12345678"}
    )
    assert response.status_code == 409
    assert db_session.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "name": "A", "password": "12345678"},
        {"email": "a@example.test", "name": "", "password": "12345678"},
        {"email": "a@example.test", "name": "A", "password": "short"},
        {"email": "a@example.test", "name": "A"},
        {"email": "a@example.test", "name": "A", "password": "12345678", "role": "admin"},
    ],
)
def test_bad_user_input_is_422_and_writes_nothing(
    client: TestClient, db_session: Session, payload: dict[str, str]
) -> None:
    assert client.post("/users", json=payload).status_code == 422
    assert db_session.scalar(select(func.count()).select_from(User)) == 0


def test_create_post_for_unknown_author_is_404(client: TestClient) -> None:
    response = client.post(
        "/posts", json={"author_id": 424242, "title": "T", "body": "B", "slug": "t"}
    )
    assert response.status_code == 404
    assert "user 424242 not found" in response.text


@pytest.mark.parametrize(
    "changes",
    [{"slug": "Not A Slug"}, {"author_id": 0}, {"author_id": "one"}, {"title": ""}],
)
def test_bad_post_input_is_422(client: TestClient, changes: dict[str, object]) -> None:
    author = new_user(client)
    payload = {"author_id": author["id"], "title": "T", "body": "B", "slug": "ok", **changes}
    assert client.post("/posts", json=payload).status_code == 422


def test_duplicate_slug_is_a_conflict(client: TestClient) -> None:
    author = new_user(client)
    new_post(client, author["id"])
    response = client.post(
        "/posts", json={"author_id": author["id"], "title": "T", "body": "B", "slug": "hello-world"}
    )
    assert response.status_code == 409


def test_reading_a_post_counts_each_view(client: TestClient, db_session: Session) -> None:
    post = new_post(client, new_user(client)["id"])

    first = client.get("/posts/hello-world")
    second = client.get("/posts/hello-world")

    assert first.status_code == second.status_code == 200
    assert first.json()["title"] == "Hello"
    # Each response shows the count as read; its own view is counted once the request commits
    assert [first.json()["view_count"], second.json()["view_count"]] == [0, 1]
    assert db_session.scalar(select(Post.view_count).where(Post.id == post["id"])) == 2
    assert db_session.scalar(select(func.count()).select_from(ProcessedTask)) == 2


def test_unknown_post_is_404_and_counts_nothing(client: TestClient, db_session: Session) -> None:
    assert client.get("/posts/no-such-post").status_code == 404
    assert db_session.scalar(select(func.count()).select_from(ProcessedTask)) == 0


def test_deactivate_goes_through_the_outbox(client: TestClient, db_session: Session) -> None:
    user = new_user(client)

    response = client.post(f"/users/{user['id']}/deactivate")

    assert response.status_code == 202
    row = db_session.scalar(select(OutboxMessage))
    assert row is not None
    assert (row.task_id, row.kwargs, row.sent_at) == (
        response.json()["task_id"],
        {"user_id": user["id"]},
        None,
    )
    # The relay (beat runs it every few seconds) publishes it; tasks run inline here
    assert relay().sent == 1
    assert db_session.scalar(select(User.is_active).where(User.id == user["id"])) is False


def test_deactivate_with_an_idempotency_key_enqueues_once(
    client: TestClient, db_session: Session
) -> None:
    user = new_user(client)
    headers = {"Idempotency-Key": "req-42"}

    ids = {client.post(f"/users/{user['id']}/deactivate", headers=headers).json()["task_id"]
           for _ in range(3)}  # fmt: skip

    assert ids == {f"deactivate-user:{user['id']}:req-42"}
    assert db_session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_deactivate_unknown_or_bad_user_id(client: TestClient, db_session: Session) -> None:
    assert client.post("/users/424242/deactivate").status_code == 404
    assert client.post("/users/0/deactivate").status_code == 422
    assert client.post("/users/abc/deactivate").status_code == 422
    bad_key = {"Idempotency-Key": "spaces are not allowed"}
    assert client.post("/users/1/deactivate", headers=bad_key).status_code == 422
    assert db_session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
