"""A view flush or a dormant-user run SIGKILLed at a chosen step: the next run loses nothing and
counts nothing twice. `tests.faults.crashing_run` parks the run at the step for the kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from tests.conftest import live_env
from tests.faults.crashing_run import FLUSH_STEPS
from tests.steps import (
    add_dormant_users,
    add_posts,
    applied_view_batches,
    deactivated,
    scalar,
    total_views,
    views_by_post,
)
from worker.development.live import PROJECT_ROOT, wait_until
from worker.development.processes import run_python
from worker.producer import viewbuffer

RUN = ["-m", "tests.faults.crashing_run"]


@pytest.fixture
def env(committed_db_url: URL, live_redis_url: str) -> dict[str, str]:
    """A run's environment: the test's database, and a queue of its own on the test Redis."""
    return live_env(committed_db_url, live_redis_url)


def kill_at(what: str, step: str, env: dict[str, str], tmp_path: Path) -> None:
    """Start a run that parks at `step`, wait until it is there, and SIGKILL it."""
    marker = tmp_path / "parked"
    run = subprocess.Popen(
        [sys.executable, *RUN, what, step, str(marker)], cwd=PROJECT_ROOT, env=env
    )
    try:
        wait_until(lambda: marker.exists() or run.poll() is not None, 60, what=step)
        assert run.poll() is None, f"the run exited with {run.returncode}"
    finally:
        run.kill()
        run.wait(30)


def run_to_the_end(what: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = run_python(env, *RUN, what, "none", "-")
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("step", FLUSH_STEPS)
def test_flusher_killed_at_each_step_loses_and_doubles_nothing(
    step: str, env: dict[str, str], live_db: Engine, live_redis_url: str, tmp_path: Path
) -> None:
    # Given 15 buffered views over five posts, flushed in chunks of two posts
    posts = add_posts(live_db, 5)
    queue = env["TASK_QUEUE"]
    buffer = redis.Redis.from_url(live_redis_url)
    viewbuffer.record_views(buffer, {post: i + 1 for i, post in enumerate(posts)}, queue=queue)
    env = {**env, "VIEW_FLUSH_CHUNK_SIZE": "2"}

    # When a flusher is SIGKILLed at the step, and more views arrive afterwards
    kill_at("flush", step, env, tmp_path)
    committed_at_kill = total_views(live_db)
    viewbuffer.record_views(buffer, {posts[0]: 10}, queue=queue)

    # Then only a commit is visible: all of the batch or none of it
    assert committed_at_kill == (15 if step == "after_commit" else 0)

    # And the next flush applies every view exactly once, quietly, and leaves Redis empty
    done = run_to_the_end("flush", env)
    assert views_by_post(live_db) == dict(zip(posts, [11, 2, 3, 4, 5], strict=True))
    keys = viewbuffer.buffer_keys(queue)
    assert viewbuffer.pending_views(buffer, keys) == 0
    assert buffer.exists(keys.batches) == 0
    assert applied_view_batches(live_db) == 2
    assert "WARNING" not in done.stderr
    if step == "after_commit":  # the committed batch is only cleaned up
        assert "was already applied; removed it from Redis" in done.stderr
    buffer.close()


def test_dormant_run_killed_after_two_batches_is_finished_by_the_next_run(
    env: dict[str, str], live_db: Engine, tmp_path: Path
) -> None:
    # Given 1000 dormant and 200 recently seen users, deactivated 100 per batch
    add_dormant_users(live_db, dormant=1000, recent=200)
    env = {**env, "DEACTIVATE_BATCH_SIZE": "100"}

    # When a run is SIGKILLed after two committed batches
    kill_at("deactivate", "after_batch_2", env, tmp_path)
    first = deactivated(live_db)
    assert len(first) == 200

    # Then the next run deactivates exactly the rest, and leaves the first 200 as they were
    assert "deactivated 800 users" in run_to_the_end("deactivate", env).stdout
    after = deactivated(live_db)
    assert len(after) == 1000
    assert {user: after[user] for user in first} == first
    assert scalar(live_db, "SELECT count(*) FROM users WHERE is_active") == 200
