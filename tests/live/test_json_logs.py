"""LOG_FORMAT=json on a real worker with embedded beat: every line is JSON, every line about a task
says which, and a correlation id sent with a task is on its lines and its dead letter.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.live.json_logs_tasks import ALWAYS_TRANSIENT, FLAKY, HOLD, JSON_LOGS_TASKS
from tests.steps import add_posts, failure, total_views
from worker.client import TaskClient, correlation_id
from worker.development.live import LiveProcess, LiveStack, start_process, wait_until

FIELDS = {"time", "level", "logger", "message", "pid", "role", "hostname"}
TASK_FIELDS = {"task_id", "task_name", "queue", "retries", "correlation_id"}


def parsed(process: LiveProcess) -> tuple[list[dict[str, Any]], list[str]]:
    """The output lines of `process` that are JSON objects, and those that are not."""
    objects: list[dict[str, Any]] = []
    others: list[str] = []
    for line in process.log().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            objects.append(value)
        else:
            others.append(line)
    return objects, others


def about(lines: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("task_id") == task_id]


def succeeded(worker: LiveProcess, task_id: str) -> bool:
    worker.check_alive()
    lines = about(parsed(worker)[0], task_id)
    return any(" succeeded in " in line["message"] for line in lines)


def test_json_logs_every_line_names_its_task_and_correlation_through_retry_dead_letter_and_kill(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    # Given a worker with embedded beat and one child (so every task runs on the same one),
    # logging JSON at INFO, retrying transient errors once after at most a second
    [post] = add_posts(live_db, 1)
    worker = live_stack.start_worker(
        concurrency=1,
        extra_args=["--beat", "--schedule", str(tmp_path / "beat-schedule"), "-I", JSON_LOGS_TASKS],
        env={"LOG_FORMAT": "json", "TASK_MAX_RETRIES": "1", "TASK_RETRY_BACKOFF_MAX": "1"},
    )
    marker = tmp_path / "hold-started"

    # When an API sends views with and without a correlation id, a raw producer sends a task that
    # fails once and one that always fails with its own header, and a view of a missing post
    with live_stack.producer() as producer:
        client = TaskClient(producer)
        with correlation_id("req-view"):
            correlated = client.record_view(post)
        plain = client.record_view(post)
        with correlation_id("req-missing"):
            missing = client.record_view(post + 10_000)
        flaky = live_stack.send(producer, FLAKY, headers={"correlation_id": "req-flaky"})
        gives_up = live_stack.send(
            producer, ALWAYS_TRANSIENT, headers={"correlation_id": "req-gives-up"}
        )
        wait_until(lambda: total_views(live_db) == 2, 60, 0.1, "both views applied")
        wait_until(lambda: failure(live_db, missing), 60, 0.1, "the missing post's dead letter")
        wait_until(lambda: failure(live_db, gives_up), 60, 0.1, "the give-up's dead letter")
        wait_until(lambda: succeeded(worker, flaky), 60, 0.1, "the flaky task's second run")
        # and a child is killed in the middle of a task, which is then delivered again
        held = producer.send_task(
            HOLD,
            kwargs={"marker": str(marker)},
            queue=live_stack.queue,
            headers={"correlation_id": "req-held"},
        ).id
        child = wait_until(lambda: marker.exists() and marker.read_text(), 60, 0.05, "a hold")
        assert int(child) in worker.children()
        os.kill(int(child), signal.SIGKILL)
        wait_until(lambda: succeeded(worker, held), 60, 0.1, "the held task delivered again")
    assert worker.stop() == 0  # a warm shutdown: Celery's shutdown notice is a line too

    # Then every line is one JSON object with the common fields
    lines, others = parsed(worker)
    share = 100 * len(lines) / (len(lines) + len(others))
    assert others == [], others[:5]
    assert all(line.keys() >= FIELDS for line in lines), [x for x in lines if FIELDS - x.keys()]
    assert {line["role"] for line in lines} == {"main", "child", "beat"}
    assert all(isinstance(line["pid"], int) and line["hostname"] for line in lines)
    assert not any("Traceback" in line["message"] for line in lines)

    # and every line of a child, and every line naming a task, carries the task's id and name
    ids = {correlated, plain, missing, flaky, gives_up, held}
    in_task = [
        line
        for line in lines
        if line["role"] == "child" or any(task_id in line["message"] for task_id in ids)
    ]
    with_ids = [line for line in in_task if line.get("task_id") and line.get("task_name")]
    in_task_share = 100 * len(with_ids) / len(in_task)
    figure(
        f"JSON LOGS: {len(lines)} of {len(lines) + len(others)} worker lines parse as JSON "
        f"({share:.0f}%); {len(with_ids)} of {len(in_task)} in-task lines carry task_id and "
        f"task_name ({in_task_share:.0f}%); roles {sorted({line['role'] for line in lines})}"
    )
    assert in_task_share == 100, [line for line in in_task if line not in with_ids]
    for line in in_task:
        if line["role"] == "child":
            assert line.keys() >= TASK_FIELDS, line

    # and Celery's own lines are among them: received, succeeded, retry, the lost worker
    messages = {task_id: [line["message"] for line in about(lines, task_id)] for task_id in ids}
    assert all(any(m.endswith(" received") for m in messages[task_id]) for task_id in ids)
    assert any(" succeeded in " in m for m in messages[plain])
    assert any(" retry: " in m for m in messages[flaky])
    lost = [line for line in about(lines, held) if "WorkerLostError" in json.dumps(line)]
    assert lost, about(lines, held)
    assert {line["role"] for line in lost} == {"main"}

    # and each correlation id is on every line of its task (after a retry and a redelivery
    # too), no line of the uncorrelated task has one, and nothing is left of one task on the next
    expected = {
        correlated: "req-view",
        plain: None,
        missing: "req-missing",
        flaky: "req-flaky",
        gives_up: "req-gives-up",
        held: "req-held",
    }
    for task_id, correlation in expected.items():
        assert {line.get("correlation_id") for line in about(lines, task_id)} == {correlation}
    child_lines = [line for line in lines if line["role"] == "child"]
    assert {line["task_id"] for line in child_lines} == ids
    flaky_runs = [line for line in about(lines, flaky) if line["logger"].startswith("tests.")]
    assert [line["retries"] for line in flaky_runs] == [0, 1]
    # and what a task prints is a line of its own, with its task
    printed = [line for line in about(lines, flaky) if line["logger"] == "celery.redirected"]
    assert [line["message"] for line in printed] == [
        "flaky printed on run 0",
        "flaky printed on run 1",
    ]

    # and an exception is one field of its line, the traceback included
    gave_up = [line for line in about(lines, gives_up) if "failed for good" in line["message"]]
    assert len(gave_up) == 1
    assert "Traceback" in gave_up[0]["exception"]
    assert "OperationalError" in gave_up[0]["exception"]

    # and the dead letters keep the correlation id of the request that caused them
    assert failure(live_db, missing)["correlation_id"] == "req-missing"  # type: ignore[index]
    assert failure(live_db, gives_up)["correlation_id"] == "req-gives-up"  # type: ignore[index]
    assert uuid.UUID(plain)  # the typed client chose the ids


def test_json_logs_a_standalone_beat_writes_json_lines_only(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    # Given beat run on its own (`celery -A worker.app beat`), logging JSON
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-l", "DEBUG",
        "--schedule", str(tmp_path / "beat-schedule"),
    ]  # fmt: skip
    beat = start_process("beat", command, {**live_stack.env, "LOG_FORMAT": "json"}, tmp_path)

    # When it starts, sends the ticks that are due, and is stopped
    def sent_a_tick() -> bool:
        beat.check_alive()
        return "Sending due task" in beat.log()

    try:
        wait_until(sent_a_tick, 60, 0.1, "beat to send a due task")
    finally:
        beat.stop()

    # Then every line it wrote (no banner) is a JSON object from the role beat
    lines, others = parsed(beat)
    assert others == [], others[:5]
    assert lines
    assert {line["role"] for line in lines} == {"beat"}
    assert any(line["message"] == "beat: Starting..." for line in lines)
