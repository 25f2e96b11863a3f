"""Buffered views on real Redis, PostgreSQL and workers: producers and flushers at once.

A flusher killed at each step is a fault test (tests/faults/test_killed_runs.py).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import redis
from sqlalchemy import Engine

from tests.steps import add_posts, applied_view_batches, total_views, views_by_post
from worker.contracts import FLUSH_VIEW_COUNTS
from worker.development.live import LiveStack, wait_until
from worker.producer import viewbuffer


def test_concurrent_producers_and_two_flushing_workers_count_every_view_once(
    live_stack: LiveStack, live_db: Engine
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
    buffer = redis.Redis.from_url(url)
    wait_until(
        lambda: (
            viewbuffer.pending_views(buffer, keys) == 0
            and total_views(live_db) == sum(expected.values())
        ),
        timeout=120,
        what="every buffered view committed",
    )

    # Then every post has exactly the views sent for it, and views of the missing post were dropped
    assert views_by_post(live_db) == expected
    assert sent[gone] > 0

    def dropped() -> int:
        pattern = r"dropped (\d+) views of 1 posts"
        return sum(int(n) for w in workers for n in re.findall(pattern, w.log()))

    # (the warning is written just after the batch leaves Redis)
    wait_until(lambda: dropped() == sent[gone], timeout=30, what="dropped views logged")
    per_worker = [len(re.findall(r"view batch \S+: added", w.log())) for w in workers]
    batches = applied_view_batches(live_db)
    print(f"\n{sum(sent.values())} views, {batches} batches, per worker {per_worker}")
    assert applied_view_batches(live_db) >= 2
