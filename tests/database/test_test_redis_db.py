"""The test Redis database (TEST_REDIS_DB) keeps nothing of a test once it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import redis

from worker.development.live import PROJECT_ROOT

# Run as a suite of its own, so its fixtures' teardown is over when we look.
INNER_TEST = """
import subprocess, sys

import redis
from celery import Celery
from sqlalchemy.engine import make_url

from tests.conftest import live_env

NEIGHBOUR = "{neighbour}"


def test_queues_declared_here_and_by_other_processes(live_redis_url: str) -> None:
    client = redis.Redis.from_url(live_redis_url)
    # A producer in this process declares its queue ...
    producer = Celery("inner", broker=live_redis_url, set_as_current=False)
    producer.send_task("inner.task", queue="{own}")
    producer.close()
    # ... and a worker-like process declares the live_env queue.
    queue = live_env(make_url("postgresql://unused/db"), live_redis_url)["TASK_QUEUE"]
    script = (
        "import sys; from celery import Celery; "
        "Celery('w', broker=sys.argv[1]).send_task('inner.task', queue=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, live_redis_url, queue], check=True)
    for name in ("{own}", queue):
        assert client.exists(f"_kombu.binding.{{name}}"), name
        assert client.llen(name) == 1, name
    open("{record}", "w").write(queue)


def test_a_queue_only_another_process_declares(producer) -> None:
    # The producer fixture's queue, declared by a process the test starts (a relay, a script)
    script = (
        "import sys; from celery import Celery; "
        "Celery('r', broker=sys.argv[1]).send_task('inner.task', queue=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, producer.redis_url, producer.queue], check=True)
    assert len(producer.messages()) == 1
    open("{record}.producer", "w").write(producer.queue)
"""


def test_a_test_leaves_no_queue_and_no_kombu_binding_behind(
    live_redis_url: str, tmp_path: Path
) -> None:
    # Given a queue of a test running alongside, bound in the same test database
    client = redis.Redis.from_url(live_redis_url)
    neighbour = f"neighbour-{uuid.uuid4().hex[:8]}"
    client.sadd(f"_kombu.binding.{neighbour}", f"{neighbour}\x06\x16\x06\x16{neighbour}")
    client.lpush(neighbour, "message")
    own, record = f"own-{uuid.uuid4().hex[:8]}", tmp_path / "queue"
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(
        'pytest_plugins = ["tests.conftest", "tests.database.conftest"]\n'
    )
    (suite / "test_inner.py").write_text(
        textwrap.dedent(INNER_TEST.format(neighbour=neighbour, own=own, record=record))
    )

    # When a test declares queues there, in its own process and in another, and ends
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider"],
        cwd=suite,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then its queues and kombu's bindings for them are gone; the neighbour's are kept
    try:
        assert inner.returncode == 0, inner.stdout + inner.stderr
        declared_elsewhere = Path(f"{record}.producer").read_text()
        for name in (own, record.read_text(), declared_elsewhere):
            assert not client.keys(f"*{name}*"), name
        assert client.smembers(f"_kombu.binding.{neighbour}")
        assert client.llen(neighbour) == 1
    finally:
        client.delete(neighbour, f"_kombu.binding.{neighbour}")
        client.close()
