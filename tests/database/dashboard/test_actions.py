"""Retry one, the selected or all matching, and purge: the CLI's own functions and rules."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.database.dashboard.steps import Published, csrf, dead_letter, remaining
from worker.contracts import DEACTIVATE_USER, RECORD_VIEW
from worker.models import ProcessedTask, TaskFailure
from worker.operations.deadletters import requeue_id


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
