"""Where a task's time goes: py-spy on a warm pool child while it drains a queue of one task.

`python -m benchmarks.profile_tasks [--task tasks.posts.record_view] [--count 3000]` starts its
own worker (-c 1) like the benchmark does, records the child (idle frames included, so time
spent waiting for PostgreSQL and Redis counts) and the main process, and prints where the
wall-clock time went: inclusive shares of the frames that matter, then the top self frames.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.noop_tasks import NOOP
from benchmarks.overhead import drain
from benchmarks.stack import bench
from worker.contracts import RECORD_VIEW
from worker.development.databases import unpooled
from worker.development.seed import add_posts

# Frames worth an inclusive share, matched as substrings of "function (file)".
MARKERS = (
    "__call__ (worker/runtime/task.py)",
    "validate_arguments (worker/contracts.py)",
    "apply_once (worker/runtime/task.py)",
    "claim (worker/ledger.py)",
    "record_view (worker/posts.py)",
    "session_scope (worker/db.py)",
    "commit (sqlalchemy/orm/session.py)",
    "_connection_for_bind (sqlalchemy/orm/session.py)",
    "_do_ping_w_event (sqlalchemy/engine/default.py)",
    "do_ping (sqlalchemy/engine/default.py)",
    "_checkout (sqlalchemy/pool/base.py)",
    "_finalize_fairy (sqlalchemy/pool/base.py)",
    "do_execute (sqlalchemy/engine/default.py)",
    "do_commit (sqlalchemy/engine/default.py)",
    "do_rollback (sqlalchemy/engine/default.py)",
    "close (sqlalchemy/orm/session.py)",
    "_compile_w_cache (sqlalchemy/sql/elements.py)",
    "trace_task (celery/app/trace.py)",
    "on_success (celery/app/trace.py)",
    "_fast_trace_task (celery/app/trace.py)",
    "receive (billiard/pool.py)",
    "workloop (billiard/pool.py)",
)


def summarise(raw: Path, top: int = 15) -> str:
    """Inclusive shares of MARKERS and the top self frames, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        seen = {marker for marker in MARKERS for frame in frames if marker in frame}
        for marker in seen:
            inclusive[marker] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; inclusive share of wall-clock time:"]
    lines += [f"  {inclusive[m] / total:6.1%}  {m}" for m in MARKERS if inclusive[m]]
    lines.append("top self frames:")
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    return "\n".join(lines)


def record(pid: int, out: Path, idle: bool) -> subprocess.Popen[bytes]:
    command = ["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", str(out)]
    command += ["--idle"] if idle else []
    command += ["--nolineno", "-r", "200"]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, *command[1:]], stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_tasks")
    parser.add_argument("--task", default=RECORD_VIEW, choices=[RECORD_VIEW, NOOP])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1, help="pool children (-c)")
    parser.add_argument(
        "--on-cpu", action="store_true", help="sample only frames on the CPU (no waiting)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="worker setting"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        with bench(tmp) as run:
            url = run.databases.migrated("profile")
            with unpooled(url) as db:
                posts = add_posts(db, 1000)
            worker = run.start_worker(url, concurrency=args.concurrency, **env)
            drain(worker, args.task, posts, 300)  # warm up
            worker.wait_drained(60)
            worker.pause()
            worker.preload(args.task, ([posts[i % len(posts)]] for i in range(args.count)))
            child = min(worker.worker.children())  # the first of them when -c > 1
            idle = not args.on_cpu
            main_pid = worker.worker.pid
            recorders = {
                "pool child": (record(child, tmp / "child.txt", idle), tmp / "child.txt"),
                "main process": (record(main_pid, tmp / "main.txt", idle), tmp / "main.txt"),
            }
            time.sleep(1)  # py-spy attaches before the first task runs
            started = time.perf_counter()
            worker.resume()
            worker.wait_drained(600)
            elapsed = time.perf_counter() - started
            for recorder, _ in recorders.values():
                recorder.send_signal(signal.SIGINT)
                recorder.wait(60)
            print(
                f"{args.task}: {args.count} tasks in {elapsed:.2f}s ({args.count / elapsed:.0f}/s)"
            )
            for name, (_, path) in recorders.items():
                print(f"\n== {name} ==\n{summarise(path)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
