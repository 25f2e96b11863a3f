"""What the operations layer costs: a record_view drain with metrics and JSON logs on vs off."""

from __future__ import annotations

import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from benchmarks.overhead import drain
from benchmarks.report import Row, median, number, progress
from benchmarks.stack import Bench, checkpoint, engine
from benchmarks.views import vacuum
from worker.contracts import RECORD_VIEW
from worker.development.live import LiveWorker
from worker.development.processes import free_port
from worker.development.seed import total_views

SCENARIO = "metrics and JSON logs overhead"
TARGET = 0.95


def instrumentation_overhead(run: Bench, url: URL, posts: list[int], count: int, pairs: int) -> Row:
    """Two workers with the shipped settings on one database: one serving /metrics with
    LOG_FORMAT=json, one with WORKER_HTTP_PORT=0 (no probes, no metrics) and text logs. They
    drain `count` queued record_view tasks in turn, in pairs that alternate which goes first;
    the ratio is the median of the pairs' throughput ratios (on / off).

    Wall time on a shared box moves by tens of percent between drains; the CPU each worker
    (main process and children) spent on a drain moves much less, so the note gives the median
    CPU per task of each side as well: what the instrumentation costs, with the noise taken out.
    """
    port = free_port()
    on = run.start_worker(url, None, WORKER_HTTP_PORT=str(port), LOG_FORMAT="json")
    off = run.start_worker(url, None, WORKER_HTTP_PORT="0", LOG_FORMAT="text")
    db = engine(url)
    vacuum(db)
    checkpoint(url)
    warm = min(count, 200)
    for worker in (on, off):  # every child's engine and imports, before any timing
        drain(worker, RECORD_VIEW, posts, warm)
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    ratios = []
    for pair in range(pairs):
        order = [("on", on), ("off", off)] if pair % 2 else [("off", off), ("on", on)]
        for name, worker in order:
            before, cpu_before = total_views(db), cpu_seconds(worker.worker)
            seconds[name].append(drain(worker, RECORD_VIEW, posts, count))
            cpu[name].append((cpu_seconds(worker.worker) - cpu_before) / count)
            if total_views(db) != before + count:
                raise RuntimeError(f"{name}: {total_views(db) - before} of {count} views applied")
        ratios.append(seconds["off"][-1] / seconds["on"][-1])
        progress(
            f"instrumentation pair {pair + 1}: on {seconds['on'][-1]:.2f}s, "
            f"off {seconds['off'][-1]:.2f}s, ratio {ratios[-1]:.3f}"
        )
    db.dispose()
    counted = _succeeded(port)
    expected = warm + pairs * count
    if counted != expected:
        raise RuntimeError(f"/metrics counted {counted} record_view runs, expected {expected}")
    for worker in (on, off):  # the CPUs go back to the scenarios after this one
        worker.worker.stop()
    on_rate, off_rate = count / median(seconds["on"]), count / median(seconds["off"])
    ratio = median(ratios)
    cpu_on, cpu_off = median(cpu["on"]) * 1000, median(cpu["off"]) * 1000
    # A smoke run's drains can be shorter than the kernel's 10 ms tick of CPU accounting.
    extra = f"{(cpu_on / cpu_off - 1) * 100:+.1f}%" if cpu_off else "too short to tell"
    return Row(
        scenario=SCENARIO,
        ours=number(on_rate, "tasks/s"),
        baseline=number(off_rate, "tasks/s"),
        ratio=ratio,
        target=f">= {TARGET}x",
        passed=ratio >= TARGET,
        ours_rate=on_rate,
        baseline_rate=off_rate,
        rate_unit="tasks/s",
        note=(
            f"{count:,} queued record_view tasks per run on a warm worker, shipped settings, "
            f"-l INFO; ours: every run counted in the main process and served at /metrics "
            f"({counted:,} runs counted), LOG_FORMAT=json; baseline: WORKER_HTTP_PORT=0 and text "
            f"logs, the same run; ratio: median of {pairs} alternating pairs "
            f"({', '.join(f'{r:.2f}' for r in sorted(ratios))}); CPU per task (main process and "
            f"children, median): on {cpu_on:.3f} ms, off {cpu_off:.3f} ms, {extra}"
        ),
    )


def cpu_seconds(worker: LiveWorker) -> float:
    """CPU time a worker has used: its main process, the children it has reaped, and the live
    ones (/proc/<pid>/stat: utime, stime, cutime, cstime)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int, reaped: bool) -> float:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that exited since it was listed: its parent's now
            return 0.0
        times = [int(value) for value in fields[11:15]]  # fields 14-17 of proc(5)
        return sum(times if reaped else times[:2]) / tick

    return used(worker.pid, reaped=True) + sum(used(pid, False) for pid in worker.children())


def _succeeded(port: int) -> int:
    """record_view runs /metrics counted as succeeded."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "worker_tasks_total" and sample.labels == {
                "task": RECORD_VIEW,
                "outcome": "succeeded",
            }:
                return int(sample.value)
    return 0
