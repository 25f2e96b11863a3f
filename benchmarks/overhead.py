"""Per-task overhead: draining record_view vs no-op tasks, and pool child memory over many tasks."""

from __future__ import annotations

import time

from sqlalchemy.engine import URL

from benchmarks.noop_tasks import NOOP
from benchmarks.report import Row, median, number, progress
from benchmarks.stack import BenchWorker, checkpoint, engine
from benchmarks.views import vacuum
from worker.config import get_settings
from worker.contracts import RECORD_VIEW
from worker.development.seed import total_views


def drain(worker: BenchWorker, task_name: str, posts: list[int], count: int) -> float:
    """Seconds for the (warm) worker to run `count` queued tasks, from resume to empty queue."""
    worker.wait_drained(timeout=600)
    worker.pause()
    worker.preload(task_name, ([posts[i % len(posts)]] for i in range(count)))
    started = time.perf_counter()
    worker.resume()
    worker.wait_drained(timeout=max(600.0, count / 20))
    return time.perf_counter() - started


def task_drain(worker: BenchWorker, url: URL, posts: list[int], count: int, runs: int) -> Row:
    """record_view tasks vs no-op tasks on the same worker, in pairs run back to back.

    The ratio is the median of the pairs' ratios: a pair shares the machine's load of the
    moment, which on a shared box drifts more between pairs than within one. Pairs alternate
    which task goes first.
    """
    db = engine(url)
    vacuum(db)  # settle the freshly seeded posts, so autovacuum does not do it mid-timing
    checkpoint(url)
    drain(worker, RECORD_VIEW, posts, min(count, 200))  # warm every child's engine and imports
    drain(worker, NOOP, posts, min(count, 200))
    ours, baseline, ratios = [], [], []
    for run in range(runs):
        if run % 2:
            baseline.append(drain(worker, NOOP, posts, count))
        before = total_views(db)
        ours.append(drain(worker, RECORD_VIEW, posts, count))
        if total_views(db) != before + count:
            raise RuntimeError(f"record_view drain: {total_views(db) - before} of {count} views")
        if not run % 2:
            baseline.append(drain(worker, NOOP, posts, count))
        ratios.append(baseline[-1] / ours[-1])
        progress(
            f"drain pair {run + 1}: record_view {ours[-1]:.2f}s, no-op {baseline[-1]:.2f}s, "
            f"ratio {ratios[-1]:.3f}"
        )
    db.dispose()
    ours_rate, base_rate = count / median(ours), count / median(baseline)
    ratio = median(ratios)
    settings = get_settings()
    return Row.of_rates(
        "per-view task drain",
        (ours_rate, base_rate),
        "tasks/s",
        ratio,
        target=">= 0.9x",
        passed=ratio >= 0.9,
        note=(
            f"{count:,} queued tasks per run, the shipped worker settings (prefork, "
            f"{settings.pool_children} "
            f"children, prefetch multiplier {settings.worker_prefetch_multiplier}, children at "
            f"nice {settings.worker_child_nice}), -l INFO, warm pool; "
            "baseline: a no-op task taking the same argument on the same worker; ratio: median "
            f"of {runs} back-to-back pairs ({', '.join(f'{r:.2f}' for r in sorted(ratios))})"
        ),
    )


def child_rss(worker: BenchWorker, posts: list[int], count: int) -> Row:
    """Growth of the (single) pool child's RSS over `count` record_view tasks after a warm-up."""
    drain(worker, RECORD_VIEW, posts, min(count, 2000))
    before = worker.child_rss_kib()
    elapsed = drain(worker, RECORD_VIEW, posts, count)
    after = worker.child_rss_kib()
    if set(before) != set(after):
        raise RuntimeError(f"pool children changed during the run: {before} -> {after}")
    growth_mib = max((after[pid] - before[pid]) / 1024 for pid in before)
    progress(f"rss: {before} -> {after} KiB over {count} tasks in {elapsed:.1f}s")
    return Row(
        scenario="child RSS growth",
        ours=number(growth_mib, "MB"),
        baseline="-",
        ratio=None,
        target="< 10 MB",
        passed=growth_mib < 10,
        note=(
            f"{count:,} record_view tasks through one pool child (-c 1) after a warm-up; "
            f"RSS {max(before.values()) / 1024:.1f} -> {max(after.values()) / 1024:.1f} MB"
        ),
    )
