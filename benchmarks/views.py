"""View counting scenarios: buffered views end to end, and the cost of one buffered call."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from typing import Any

import psycopg2
import redis
from psycopg2.extras import execute_values
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from benchmarks.report import Row, median, number, progress
from benchmarks.stack import BenchWorker, engine
from worker.contracts import FLUSH_VIEW_COUNTS, RECORD_VIEW
from worker.development.live import wait_until
from worker.development.seed import total_views
from worker.producer import viewbuffer

RAW_UPDATE = (
    "UPDATE posts SET view_count = posts.view_count + v.n, updated_at = now() "
    "FROM (VALUES %s) AS v(id, n) WHERE posts.id = v.id"
)


def vacuum(db: Engine) -> None:
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE posts"))


def raw_update(url: URL, totals: Counter[int], page_size: int) -> float:
    """The baseline: plain psycopg2, one transaction, UPDATE ... FROM (VALUES ...) in pages."""
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn)
    try:
        rows = sorted(totals.items())
        started = time.perf_counter()
        with connection, connection.cursor() as cursor:
            execute_values(cursor, RAW_UPDATE, rows, page_size=page_size)
        return time.perf_counter() - started
    finally:
        connection.close()


# API services call from many processes at once; two match this machine's two cores.
PRODUCERS = 2
_FORK = multiprocessing.get_context("fork")


def _produce(redis_url: str, queue: str, calls: list[dict[int, int]]) -> None:
    client: redis.Redis[Any] = redis.Redis.from_url(redis_url)
    for counts in calls:
        viewbuffer.record_views(client, counts, queue=queue)
    client.close()


def buffered_end_to_end(
    worker: BenchWorker, url: URL, posts: list[int], views: int, runs: int, chunk: int
) -> Row:
    """`views` views over `posts` as record_views calls of 1,000 views, then one flush task.

    The calls come from PRODUCERS processes. Timed from the first call until the flush has
    committed and removed its batch. The baseline applies the same per-post totals with raw
    psycopg2 on the same table.
    """
    rng = random.Random(5)
    viewed = [rng.choice(posts) for _ in range(views)]
    calls = [dict(Counter(viewed[i : i + 1000])) for i in range(0, views, 1000)]
    totals = Counter(viewed)
    url_of_redis = worker.stack.env["REDIS_URL"]
    client: redis.Redis[Any] = redis.Redis.from_url(url_of_redis)
    keys = viewbuffer.buffer_keys(worker.queue)
    db = engine(url)

    def committed() -> bool:
        return not client.exists(keys.pending) and client.scard(keys.batches) == 0

    ours, baseline = [], []
    for run in range(runs):
        vacuum(db)
        before = total_views(db)
        started = time.perf_counter()
        producers = [
            _FORK.Process(target=_produce, args=(url_of_redis, worker.queue, calls[i::PRODUCERS]))
            for i in range(PRODUCERS)
        ]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join()
            if producer.exitcode != 0:
                raise RuntimeError(f"a producer process exited with {producer.exitcode}")
        buffered = time.perf_counter() - started
        worker.producer.send_task(FLUSH_VIEW_COUNTS, queue=worker.queue)
        wait_until(committed, timeout=600, interval=0.01, what="views flushed")
        ours.append(time.perf_counter() - started)
        if total_views(db) != before + views:
            raise RuntimeError(f"buffered views: expected {before + views}, got {total_views(db)}")
        vacuum(db)
        baseline.append(raw_update(url, totals, chunk))
        progress(
            f"views e2e run {run + 1}: ours {ours[-1]:.2f}s (calls {buffered:.2f}s), "
            f"raw {baseline[-1]:.2f}s"
        )
    client.close()
    db.dispose()
    ours_rate, base_rate = views / median(ours), views / median(baseline)
    ratio = ours_rate / base_rate
    return Row.of_rates(
        "buffered views end to end",
        (ours_rate, base_rate),
        "views/s",
        ratio,
        target=">= 0.5x",
        passed=ratio >= 0.5,
        note=(
            f"{views:,} views over {len(posts):,} posts in record_views calls of 1,000 views "
            f"from {PRODUCERS} processes, then one flush task; baseline: raw psycopg2 "
            f"UPDATE ... FROM (VALUES ...) of the same {len(totals):,} per-post totals"
        ),
    )


def call_cost(worker: BenchWorker, calls: int, runs: int) -> Row:
    """Mean time of one buffered record_view call vs one Celery publish of record_view."""
    client: redis.Redis[Any] = redis.Redis.from_url(worker.stack.env["REDIS_URL"])
    scratch = f"{worker.queue}.publish-only"
    ours, baseline = [], []
    for run in range(runs):
        started = time.perf_counter()
        for i in range(calls):
            viewbuffer.record_view(client, 1 + i % 1000, queue=scratch)
        ours.append((time.perf_counter() - started) / calls)
        started = time.perf_counter()
        for i in range(calls):
            worker.producer.send_task(RECORD_VIEW, args=[1 + i % 1000], queue=scratch)
        baseline.append((time.perf_counter() - started) / calls)
        client.delete(scratch, *client.keys("views:{" + scratch + "}:*"))
        progress(f"call cost run {run + 1}: {ours[-1] * 1e6:.0f}us vs {baseline[-1] * 1e6:.0f}us")
    client.close()
    ours_s, base_s = median(ours), median(baseline)
    ratio = ours_s / base_s
    return Row(
        scenario="buffered record_view call",
        ours=number(ours_s * 1e6, "us/call"),
        baseline=number(base_s * 1e6, "us/call"),
        ratio=ratio,
        target="<= 0.35x",
        passed=ratio <= 0.35,
        ours_rate=1 / ours_s,
        baseline_rate=1 / base_s,
        rate_unit="calls/s",
        note=(
            f"{calls:,} calls per run from one thread; baseline: Celery send_task (what "
            "apply_async publishes) of one record_view message to Redis"
        ),
    )
