"""The tools operators already use: Flower reads a worker's tasks back from the task events that
WORKER_TASK_EVENTS turns on, and `celery inspect` reaches a live worker."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import pytest
from sqlalchemy import Engine

from tests.steps import RECORD_VIEW, add_posts, add_users
from worker.development.live import LiveProcess, LiveStack, start_process, wait_until
from worker.development.processes import free_port

DEACTIVATE_USER = "tasks.users.deactivate_user"


class Flower:
    """A Flower 2 process on a free port, its HTTP API open without authentication."""

    def __init__(self, process: LiveProcess, port: int) -> None:
        self.process, self.port = process, port

    def tasks(self) -> dict[str, dict[str, object]]:
        """GET /api/tasks: what Flower knows of each task, by task id ({} until it answers)."""
        self.process.check_alive()
        url = f"http://127.0.0.1:{self.port}/api/tasks"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                tasks: dict[str, dict[str, object]] = json.load(response)
        except (URLError, ConnectionError):
            return {}
        return tasks


@pytest.fixture
def flower(live_stack: LiveStack, tmp_path: Path) -> Iterator[Flower]:
    port = free_port()
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "flower",
        f"--port={port}", "--address=127.0.0.1",
        # Flower would otherwise switch events on itself, by remote control: the worker's
        # own setting has to be what sends them.
        "--enable_events=False",
    ]  # fmt: skip
    env = {**live_stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    process = start_process("flower", command, env, tmp_path)
    try:
        yield Flower(process, port)
    finally:
        process.stop(timeout=10)


def test_flower_reads_task_names_and_states_from_a_worker_with_task_events(
    live_stack: LiveStack, live_db: Engine, flower: Flower
) -> None:
    # Given a worker started with WORKER_TASK_EVENTS=true, and Flower watching the broker
    post = add_posts(live_db, 1)[0]
    user = add_users(live_db, 1)[0]
    live_stack.start_worker(concurrency=1, env={"WORKER_TASK_EVENTS": "true"})

    with live_stack.producer() as client:
        # Events are broadcast, not queued: only those sent once Flower listens reach it.
        sent: list[str] = []

        def flower_saw_one() -> bool:
            sent.append(live_stack.send(client, RECORD_VIEW, post, task_id=f"early-{len(sent)}"))
            return bool(flower.tasks().keys() & set(sent))

        wait_until(flower_saw_one, timeout=60, interval=0.5, what="Flower to see a task")

        # When the worker runs a view, a deactivation, and a view of a post that is not there
        live_stack.send(client, RECORD_VIEW, post, task_id="flower-view")
        live_stack.send(client, DEACTIVATE_USER, user, task_id="flower-deactivate")
        live_stack.send(client, RECORD_VIEW, 999_999_999, task_id="flower-missing")

    # Then Flower's HTTP API names each task and the state it ended in
    ours = ("flower-view", "flower-deactivate", "flower-missing")

    def final_states() -> dict[str, tuple[object, object]] | None:
        tasks = flower.tasks()
        states = {tid: (tasks[tid]["name"], tasks[tid]["state"]) for tid in ours if tid in tasks}
        done = len(states) == len(ours) and all(
            s in {"SUCCESS", "FAILURE"} for _, s in states.values()
        )
        return states if done else None

    states = wait_until(final_states, timeout=60, interval=0.2, what="Flower to see our tasks end")
    assert states == {
        "flower-view": (RECORD_VIEW, "SUCCESS"),
        "flower-deactivate": (DEACTIVATE_USER, "SUCCESS"),
        "flower-missing": (RECORD_VIEW, "FAILURE"),
    }


def test_celery_inspect_ping_answers_from_a_live_worker(live_stack: LiveStack) -> None:
    worker = live_stack.start_worker(concurrency=1)

    done = live_stack.inspect(worker, "ping")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{worker.node}: OK" in done.stdout
    assert "pong" in done.stdout
