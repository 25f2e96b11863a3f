"""The whole service for real: HTTP into uvicorn, tasks through Redis, counts in PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from live_service import Service
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.development.live import wait_until
from worker.models import OutboxMessage, Post, ProcessedTask, TaskFailure, User

READS_PER_POST = 40


def created(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.end_to_end
def test_views_and_deactivation_reach_postgresql_exactly_once(service: Service) -> None:
    # Given two users and three posts created over HTTP
    with httpx2.Client(base_url=service.url, timeout=30) as http:
        author, reader = (
            created(http.post("/users", json={"email": f"{name}@example.test", "name": name,
                                              "password": "long enough"}))
            for name in ("author", "reader")
        )  # fmt: skip
        slugs = [
            created(http.post("/posts", json={"author_id": author["id"], "title": f"Post {n}",
                                              "body": "...", "slug": f"post-{n}"}))["slug"]
            for n in range(3)
        ]  # fmt: skip

        # When clients read the posts concurrently, and one user is deactivated (twice, with
        # the same idempotency key, as a retrying client would)
        def read(n: int) -> int:
            with httpx2.Client(base_url=service.url, timeout=30) as own:
                return own.get(f"/posts/{slugs[n % 3]}").status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(read, range(3 * READS_PER_POST)))
        deactivations = [
            http.post(f"/users/{reader['id']}/deactivate", headers={"Idempotency-Key": "e2e"})
            for _ in range(2)
        ]
        # and bad requests are refused without enqueueing anything
        assert http.get("/posts/no-such-post").status_code == 404
        assert http.post("/users/999999/deactivate").status_code == 404
        assert http.post("/posts", json={"author_id": "x"}).status_code == 422

    assert statuses == [200] * (3 * READS_PER_POST)
    assert [r.status_code for r in deactivations] == [202, 202]
    assert deactivations[0].json() == deactivations[1].json()

    # Then the worker applies every view once, and the outbox relay (run by beat) delivers
    # the deactivation once
    def settled() -> bool:
        service.worker.check_alive()
        with Session(service.db) as session:
            applied = session.scalar(select(func.count()).select_from(ProcessedTask))
            return applied == 3 * READS_PER_POST + 1

    wait_until(settled, timeout=120, what="every view and the deactivation to be applied")
    with Session(service.db) as session:
        counts = dict(session.execute(select(Post.slug, Post.view_count)).all())
        active = dict(session.execute(select(User.id, User.is_active)).all())
        failures = session.scalar(select(func.count()).select_from(TaskFailure))
        outbox = session.execute(select(OutboxMessage.task_id, OutboxMessage.sent_at)).all()
    assert counts == dict.fromkeys(slugs, READS_PER_POST)
    assert active == {author["id"]: True, reader["id"]: False}
    assert failures == 0
    assert len(outbox) == 1
    assert outbox[0].task_id == deactivations[0].json()["task_id"]
    assert outbox[0].sent_at is not None
