"""`python -m benchmarks [--smoke]`: run every scenario, print the table, save it and a chart."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.deactivation import bulk_deactivation
from benchmarks.instrumentation import SCENARIO as INSTRUMENTATION
from benchmarks.instrumentation import instrumentation_overhead
from benchmarks.overhead import child_rss, task_drain
from benchmarks.report import SCENARIOS, Row, chart, markdown_table, notes, text_table
from benchmarks.stack import Bench, bench
from benchmarks.views import buffered_end_to_end, call_cost
from worker.config import get_settings
from worker.development.databases import unpooled
from worker.development.seed import add_posts

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    users: int
    posts: int
    views: int
    calls: int
    drain: int
    drain_pairs: int
    instrumentation_pairs: int
    rss_tasks: int
    runs: int


FULL = Sizes(
    users=1_000_000,
    posts=100_000,
    views=500_000,
    calls=5_000,
    # Many short pairs rather than a few long ones: the load of a shared box drifts between
    # pairs, and the median of nine ratios moves less than the median of five.
    drain=3_000,
    drain_pairs=9,
    # Its difference is a few percent, inside a pair's noise: more pairs to see it.
    instrumentation_pairs=15,
    rss_tasks=100_000,
    runs=3,
)
SMOKE = Sizes(
    users=2_000,
    posts=200,
    views=2_000,
    calls=200,
    drain=100,
    drain_pairs=1,
    instrumentation_pairs=1,
    rss_tasks=300,
    runs=1,
)


def _failed(scenario: str, error: BaseException) -> Row:
    return Row(
        scenario=scenario,
        ours="error",
        baseline="-",
        ratio=None,
        target="-",
        passed=False,
        note=f"{type(error).__name__}: {error}",
    )


def run_all(run: Bench, sizes: Sizes, only: set[str]) -> list[Row]:
    rows: list[Row] = []

    def wanted(*scenarios: str) -> bool:
        return not only or bool(only.intersection(scenarios))

    def attempt(scenario: str, measure: Callable[[], Row]) -> None:
        if not wanted(scenario):
            return
        print(f"{scenario}...", file=sys.stderr, flush=True)
        try:
            rows.append(measure())
        except Exception as error:
            traceback.print_exc()
            rows.append(_failed(scenario, error))

    # Deactivation first, while no worker of ours competes for the CPU.
    attempt("bulk deactivation", lambda: bulk_deactivation(run.databases, sizes.users, sizes.runs))

    if wanted("buffered views end to end", "buffered record_view call"):
        views_url = run.databases.migrated("views")
        with unpooled(views_url) as db:
            posts = add_posts(db, sizes.posts)
        # The worker as shipped: default pool size, prefetch and child priority (worker.config).
        worker = run.start_worker(views_url, concurrency=None)
        chunk = get_settings().view_flush_chunk_size
        attempt(
            "buffered views end to end",
            lambda: buffered_end_to_end(worker, views_url, posts, sizes.views, sizes.runs, chunk),
        )
        attempt("buffered record_view call", lambda: call_cost(worker, sizes.calls, sizes.runs))
        worker.stack.stop()

    if wanted("per-view task drain", "child RSS growth"):
        # A database of its own: the views scenario leaves posts bloated by its million and a
        # half updates, which is that scenario's cost, not a task's.
        drain_url = run.databases.migrated("drain")
        with unpooled(drain_url) as db:
            drain_posts = add_posts(db, sizes.posts)
        if wanted("per-view task drain"):
            worker = run.start_worker(drain_url, concurrency=None)
            attempt(
                "per-view task drain",
                lambda: task_drain(worker, drain_url, drain_posts, sizes.drain, sizes.drain_pairs),
            )
            worker.stack.stop()
        if wanted("child RSS growth"):
            single = run.start_worker(drain_url, concurrency=1)
            attempt("child RSS growth", lambda: child_rss(single, drain_posts, sizes.rss_tasks))

    if wanted(INSTRUMENTATION):
        # A database of its own, for the reason the drain has one.
        url = run.databases.migrated("instrumented")
        with unpooled(url) as db:
            posts = add_posts(db, sizes.posts)
        attempt(
            INSTRUMENTATION,
            lambda: instrumentation_overhead(
                run, url, posts, sizes.drain, sizes.instrumentation_pairs
            ),
        )
    return sorted(rows, key=lambda row: SCENARIOS.index(row.scenario))


def _context(sizes: Sizes, smoke: bool, load_before: str) -> str:
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{'smoke run (tiny sizes, figures meaningless)' if smoke else 'full run'}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; medians of {sizes.runs} run(s). "
        f"Load average before/after: {load_before} / {load_after} "
        "(a shared machine: other jobs ran at the same time)."
    )


def save(rows: Sequence[Row], out: Path, name: str, context: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = text_table(rows)
    paths = [out / f"{name}{ext}" for ext in (".txt", ".md", ".json", ".png")]
    text_path, md_path, json_path, png_path = paths
    text_path.write_text(f"{context}\n\n{table}\n\n{notes(rows)}\n")
    md_path.write_text(f"{context}\n\n{markdown_table(rows)}\n\n{notes(rows)}\n")
    rows_data = [{**asdict(row), "result": row.result} for row in rows]
    json_path.write_text(json.dumps({"context": context, "rows": rows_data}, indent=2) + "\n")
    chart(rows, png_path, title=f"make bench: throughput per scenario ({name})")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it all runs")
    parser.add_argument("--runs", type=int, help="runs per scenario (median is reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table and chart go")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, default=[], help="run only this scenario"
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.runs:
        sizes = replace(sizes, runs=args.runs)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        with bench(tmp) as run:
            rows = run_all(run, sizes, set(args.only))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    context = _context(sizes, args.smoke, load_before)
    print(f"\n{context}\n\n{text_table(rows)}\n\n{notes(rows)}")
    written = save(rows, args.out, "bench-smoke" if args.smoke else "bench", context)
    print("\nwritten: " + ", ".join(str(path) for path in written))
    return 0 if all(row.ours != "error" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
