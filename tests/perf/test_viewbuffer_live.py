"""Buffered views on real Redis, PostgreSQL and workers: concurrency, and kill -9 at each step."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select

from tests.integration.test_live_worker import add_posts, total_views
from tests.livecelery import ROOT, LiveStack, wait_until
from tests.perf.crashing_run import FLUSH_STEPS
from worker.contracts import FLUSH_VIEW_COUNTS
from worker.models import Post, ProcessedTask
from worker.producer import viewbuffer

pytestmark = pytest.mark.integration


@pytest.fixture
def buffer(live_stack: LiveStack) -> Iterator[redis.Redis[Any]]:
    """A Redis client on the stack's database; the stack's view buffer is removed afterwards."""
    client: redis.Redis[Any] = redis.Redis.from_url(live_stack.env["REDIS_URL"])
    try:
        yield client
    finally:
        keys = client.keys("views:{" + live_stack.queue + "}:*")
        if keys:
            client.delete(*keys)
        client.close()


def counts_by_post(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(Post.id, Post.view_count)).all()
    return {row.id: row.view_count for row in rows}


def applied_batches(engine: Engine) -> int:
    query = select(func.count()).where(ProcessedTask.task_name == viewbuffer.BATCH_TASK_NAME)
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def test_concurrent_producers_and_two_flushing_workers_count_every_view_once(
    live_stack: LiveStack, live_db: Engine, buffer: redis.Redis[Any]
) -> None:
    # Given 20 posts, a post id that does not exist, and two workers that both flush
    posts = add_posts(live_db, 20)
    gone = max(posts) + 1000
    workers = [live_stack.start_worker(concurrency=1) for _ in range(2)]
    queue, url = live_stack.queue, live_stack.env["REDIS_URL"]

    def produce(seed: int) -> Counter[int]:
        rng, sent = random.Random(seed), Counter[int]()
        client: redis.Redis[Any] = redis.Redis.from_url(url)
        for i in range(1500):
            if i % 3:
                post = rng.choice(posts)
                viewbuffer.record_view(client, post, queue=queue)
                sent[post] += 1
            else:
                views = Counter(rng.choices([*posts, gone], k=5))
                viewbuffer.record_views(client, dict(views), queue=queue)
                sent.update(views)
        client.close()
        return sent

    # When four producer threads buffer views while flush tasks keep arriving for both workers
    with ThreadPoolExecutor(4) as pool, live_stack.producer() as client:
        producers = [pool.submit(produce, seed) for seed in range(4)]
        while wait(producers, timeout=0.05).not_done:
            live_stack.send(client, FLUSH_VIEW_COUNTS)
        live_stack.send(client, FLUSH_VIEW_COUNTS)
        live_stack.send(client, FLUSH_VIEW_COUNTS)
    sent = sum((future.result() for future in producers), Counter[int]())
    expected = {post: sent[post] for post in posts}

    keys = viewbuffer.buffer_keys(queue)
    wait_until(
        lambda: (
            viewbuffer.pending_views(buffer, keys) == 0
            and total_views(live_db) == sum(expected.values())
        ),
        timeout=120,
        what="every buffered view committed",
    )

    # Then every post has exactly the views sent for it, and views of the missing post were dropped
    assert counts_by_post(live_db) == expected
    assert sent[gone] > 0

    def dropped() -> int:
        pattern = r"dropped (\d+) views of 1 posts"
        return sum(int(n) for w in workers for n in re.findall(pattern, w.log()))

    # (the warning is written just after the batch leaves Redis)
    wait_until(lambda: dropped() == sent[gone], timeout=30, what="dropped views logged")
    per_worker = [len(re.findall(r"view batch \S+: added", w.log())) for w in workers]
    print(
        f"\n{sum(sent.values())} views, {applied_batches(live_db)} batches, per worker {per_worker}"
    )
    assert applied_batches(live_db) >= 2


@pytest.mark.parametrize("step", FLUSH_STEPS)
def test_flusher_killed_at_each_step_loses_and_doubles_nothing(
    step: str, live_stack: LiveStack, live_db: Engine, buffer: redis.Redis[Any], tmp_path: Path
) -> None:
    # Given 15 buffered views over five posts, flushed in chunks of two posts
    posts = add_posts(live_db, 5)
    queue = live_stack.queue
    viewbuffer.record_views(buffer, {post: i + 1 for i, post in enumerate(posts)}, queue=queue)
    env = {**live_stack.env, "VIEW_FLUSH_CHUNK_SIZE": "2"}
    command = [sys.executable, "-m", "tests.perf.crashing_run", "flush"]
    marker = tmp_path / "parked"

    # When a flusher is SIGKILLed at the step, and more views arrive afterwards
    flusher = subprocess.Popen([*command, step, str(marker)], cwd=ROOT, env=env)
    try:
        wait_until(
            lambda: marker.exists() or flusher.poll() is not None, timeout=60, what=f"{step}"
        )
        assert flusher.poll() is None, f"the flusher exited with {flusher.returncode}"
    finally:
        flusher.kill()
        flusher.wait(30)
    committed_at_kill = total_views(live_db)
    viewbuffer.record_views(buffer, {posts[0]: 10}, queue=queue)

    # Then only a commit is visible: all of the batch or none of it
    assert committed_at_kill == (15 if step == "after_commit" else 0)

    # And the next flush applies every view exactly once and leaves Redis empty
    run = subprocess.run(
        [*command, "none", str(marker)], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert counts_by_post(live_db) == {
        posts[0]: 11,
        posts[1]: 2,
        posts[2]: 3,
        posts[3]: 4,
        posts[4]: 5,
    }
    keys = viewbuffer.buffer_keys(queue)
    assert viewbuffer.pending_views(buffer, keys) == 0
    assert buffer.exists(keys.batches) == 0
    assert applied_batches(live_db) == 2
