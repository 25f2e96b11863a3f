"""What a worker with embedded beat logs: idle ticks stay below INFO, a failure is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from tests.steps import add_posts, total_views
from worker.contracts import FLUSH_VIEW_COUNTS, OUTBOX_RELAY, RECORD_VIEW
from worker.development.live import LiveStack, LiveWorker, wait_until
from worker.producer import viewbuffer

pytestmark = pytest.mark.integration

# Celery's worker log format: "[2026-01-01 12:00:00,000: INFO/MainProcess] message"
LINE = re.compile(r"^\[[^\]]*?: (?P<level>[A-Z]+)/[^\]]+\] (?P<message>.*)$")
TICK_NAMES = (FLUSH_VIEW_COUNTS, OUTBOX_RELAY, "flush-view-counts", "relay-outbox")
SUCCEEDED = re.compile(r"succeeded in [0-9.e-]+s: (?P<result>.*)$")


def lines(worker: LiveWorker) -> list[tuple[str, str]]:
    """(level, message) of every log line; traceback lines under a record are left out."""
    matches = (LINE.match(line) for line in worker.log().splitlines())
    return [(m["level"], m["message"]) for m in matches if m]


def at_info_or_above(worker: LiveWorker) -> list[str]:
    return [message for level, message in lines(worker) if level != "DEBUG"]


def dead_letter_class(engine: Engine, task_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT error_class FROM task_failures WHERE task_id = :id"), {"id": task_id}
        )


def test_idle_ticks_log_below_info_and_a_permanent_failure_logs_one_line(
    live_stack: LiveStack, live_db: Engine, tmp_path: Path
) -> None:
    # Given a worker with embedded beat, logging at DEBUG so that every line shows its level
    [post] = add_posts(live_db, 1)
    worker = live_stack.start_worker(
        concurrency=1,
        extra_args=["--beat", "--schedule", str(tmp_path / "beat-schedule"), "-l", "DEBUG"],
        env={"VIEW_FLUSH_INTERVAL": "0.5"},
    )

    # When a view is buffered, a view of a missing post is sent, and beat keeps ticking
    client = redis.Redis.from_url(live_stack.env["REDIS_URL"])
    viewbuffer.record_view(client, post, queue=live_stack.queue)
    client.close()
    wait_until(lambda: total_views(live_db) == 1, 60, 0.1, "the buffered view flushed")
    with live_stack.producer() as producer:
        live_stack.send(producer, RECORD_VIEW, post + 10_000, task_id="view-of-a-missing-post")
    wait_until(lambda: dead_letter_class(live_db, "view-of-a-missing-post"), 60, 0.1, "dead letter")
    flushes_before = sum(FLUSH_VIEW_COUNTS in message for _, message in lines(worker))

    def idle_ticks_after_the_failure() -> bool:
        relays = [m for _, m in lines(worker) if "Sending due task relay-outbox" in m]
        flushes = sum(FLUSH_VIEW_COUNTS in message for _, message in lines(worker))
        return len(relays) >= 2 and flushes >= flushes_before + 6

    wait_until(idle_ticks_after_the_failure, 60, 0.2, "more idle ticks")
    worker.stop()

    # Then the ticks ran, and at INFO only the one that did work shows, with what it did
    debug = [message for level, message in lines(worker) if level == "DEBUG"]
    assert any(f"Task {OUTBOX_RELAY}[" in m and m.endswith("received") for m in debug)
    assert any(f"Task {FLUSH_VIEW_COUNTS}[" in m and m.endswith(": 0") for m in debug)
    shown = at_info_or_above(worker)
    ticks = [message for message in shown if any(name in message for name in TICK_NAMES)]
    assert ticks, "the flush that added the view"
    for message in ticks:
        succeeded = SUCCEEDED.search(message)
        assert "added 1 views to 1 posts" in message or (
            succeeded is not None and succeeded["result"] != "0"
        ), message

    # And the failure is one line, under the class the task raised, as in its dead letter
    assert dead_letter_class(live_db, "view-of-a-missing-post") == "NotFound"
    about_it = [message for message in shown if "view-of-a-missing-post" in message]
    assert len(about_it) == 2, about_it
    assert about_it[0].endswith("received")
    assert "failed for good: NotFound: post" in about_it[1]
    assert "PermanentError" not in worker.log()
