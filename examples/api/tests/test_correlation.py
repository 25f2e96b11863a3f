"""X-Request-ID: the correlation id of the tasks a request enqueues, from the API to the worker's
JSON log lines and to the dead letter of a task that fails for good."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from live_service import running_api
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from worker.config import get_settings
from worker.development.live import (
    LiveProcess,
    forget_queue,
    stack_env,
    start_worker,
    wait_until,
)
from worker.development.processes import run_cli


def created(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def a_post(http: Any, slug: str) -> int:
    author = created(
        http.post("/users", json={"email": f"{slug}@example.test", "name": "A",
                                  "password": "long enough"})
    )  # fmt: skip
    post = created(
        http.post("/posts", json={"author_id": author["id"], "title": "T", "body": "B",
                                  "slug": slug})
    )  # fmt: skip
    return int(post["id"])


def test_correlation_the_request_id_is_sent_back_and_given_to_the_tasks_of_the_request(
    client: TestClient, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    a_post(client, "read-me")

    given = client.get("/posts/read-me", headers={"X-Request-ID": "req-in-process"})
    missing = client.get("/posts/read-me")
    invalid = client.get("/posts/read-me", headers={"X-Request-ID": "has spaces in it"})

    assert given.headers["X-Request-ID"] == "req-in-process"
    assert len(missing.headers["X-Request-ID"]) == 32
    assert invalid.headers["X-Request-ID"] not in (
        "has spaces in it",
        missing.headers["X-Request-ID"],
    )
    lines = json_logs()
    views = [line for line in lines if line.get("task_name") == "tasks.posts.record_view"]
    assert [line["correlation_id"] for line in views if " succeeded in " in line["message"]] == [
        "req-in-process",
        missing.headers["X-Request-ID"],
        invalid.headers["X-Request-ID"],
    ]


def parsed(process: LiveProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.log().splitlines()]


@pytest.mark.end_to_end
def test_correlation_a_request_id_reaches_the_task_log_lines_and_its_dead_letter(
    committed_db_url: URL, tmp_path: Path
) -> None:
    redis_url = get_settings().redis_url.get_secret_value()
    env = stack_env(committed_db_url, redis_url, prefix="corr", LOG_FORMAT="json")
    db = create_engine(committed_db_url, poolclass=NullPool)
    worker = None
    try:
        with running_api(env, tmp_path) as url:
            # Given two posts, read by clients that send their request ids, before any worker runs
            with httpx2.Client(base_url=url, timeout=30) as http:
                a_post(http, "kept")
                a_post(http, "vanishing")
                kept = http.get("/posts/kept", headers={"X-Request-ID": "req-e2e-kept"})
                vanishing = http.get("/posts/vanishing", headers={"X-Request-ID": "req-e2e-gone"})
            assert (kept.status_code, vanishing.status_code) == (200, 200)
            assert vanishing.headers["X-Request-ID"] == "req-e2e-gone"
            # and one of the posts is deleted before its view is counted: that task fails for good
            with db.begin() as connection:
                connection.execute(text("DELETE FROM posts WHERE slug = 'vanishing'"))

            # When a worker logging JSON starts and runs both tasks
            worker = start_worker(env, tmp_path, "corr-worker", concurrency=1)

            def dead_letter() -> Any:
                with db.connect() as connection:
                    return connection.execute(
                        text("SELECT task_id, correlation_id FROM task_failures")
                    ).one_or_none()

            failed = wait_until(
                dead_letter, 60, 0.1, "the vanished post's view to be dead-lettered"
            )
            wait_until(
                lambda: any(
                    " succeeded in " in line["message"]
                    and line.get("correlation_id") == "req-e2e-kept"
                    for line in parsed(worker)
                ),
                60,
                0.1,
                "the kept post's view to be counted",
            )
            worker.stop()
            shown = run_cli(env, "failures", "show", failed.task_id, timeout=60)
    finally:
        if worker is not None:
            worker.stop()
        db.dispose()
        forget_queue(redis_url, env["TASK_QUEUE"])

    # Then the dead letter keeps the request's id, and `failures show` prints it
    assert failed.correlation_id == "req-e2e-gone"
    assert shown.returncode == 0, shown.stderr
    assert "correlation:  req-e2e-gone" in shown.stdout
    # and every line the worker wrote about each task carries its request's id
    lines = parsed(worker)
    by_request = {
        correlation: [line for line in lines if line.get("correlation_id") == correlation]
        for correlation in ("req-e2e-kept", "req-e2e-gone")
    }
    gone = [line for line in lines if line.get("task_id") == failed.task_id]
    assert gone == by_request["req-e2e-gone"]
    assert any("failed for good: NotFound" in line["message"] for line in gone)
    assert any(line["message"].endswith(" received") for line in gone)
    assert {line["role"] for line in gone} == {"main", "child"}
    assert any(" succeeded in " in line["message"] for line in by_request["req-e2e-kept"])
