"""The probes of a real prefork worker: /livez and /readyz, their thresholds, `worker health`."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.live.probe_tasks import (
    BLOCK_MAIN_LOOP,
    GONE,
    PROBE_TASKS,
    SPIN,
    ask,
    seconds_until,
    status,
)
from worker.development.live import LiveStack, LiveWorker, wait_until
from worker.development.processes import free_port, run_python

pytestmark = pytest.mark.integration

# `python -m worker health` in a process of its own, reporting whether it imported Celery.
HEALTH = """
import json, runpy, sys
sys.argv = ["worker", "health", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("worker", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "celery": [m for m in sys.modules if m.split(".")[0] in
                  ("celery", "kombu", "billiard")]}))
"""


def health(env: dict[str, str], *args: str) -> tuple[int, list[str], str]:
    """Exit code, Celery modules imported, and output of `python -m worker health ARGS`."""
    done = run_python(env, "-c", HEALTH, *args, timeout=60)
    *printed, last = done.stdout.strip().splitlines()
    report = json.loads(last)
    return report["code"] or 0, report["celery"], "\n".join(printed) + done.stderr


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc: its sockets, the kernel's LISTEN table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def probed_worker(
    stack: LiveStack, concurrency: int = 2, **env: str
) -> tuple[LiveWorker, int, float]:
    """A worker serving probes on a free port, and the seconds from " ready." to /readyz 200."""
    port = free_port()
    worker = stack.start_worker(
        concurrency=concurrency,
        extra_args=["-I", PROBE_TASKS],
        env={"WORKER_HTTP_PORT": str(port), **env},
    )
    return worker, port, seconds_until(port, "/readyz", 200, 10)


def test_a_consuming_worker_is_alive_and_ready_and_health_says_so_without_celery(
    live_stack: LiveStack,
) -> None:
    # Given a prefork worker serving probes
    worker, port, became_ready = probed_worker(live_stack)

    # Then /livez and /readyz answer 200, each check passing, from the main process only
    assert ask(port, "/livez")[0] == 200
    code, body = ask(port, "/readyz")
    assert (code, body["checks"]) == (
        200,
        {"consumer": "attached", "redis": "ok", "postgres": "ok"},
    )
    assert status(port, "/nowhere") == 404
    assert port in listening_ports(worker.pid)
    assert all(port not in listening_ports(child) for child in worker.children())

    # And `python -m worker health [--ready]` exits 0, importing no Celery
    env = {**live_stack.env, "WORKER_HTTP_PORT": str(port)}
    for args in ((), ("--ready",)):
        exit_code, celery_modules, output = health(env, *args)
        assert (exit_code, celery_modules) == (0, []), output

    # When the worker is gone, it exits 1
    worker.kill()
    exit_code, celery_modules, output = health(env, "--ready")
    assert (exit_code, celery_modules) == (1, [])
    assert "no answer" in output
    print(f"\n/readyz 200 {became_ready:.2f}s after the worker logged ready")


def test_probes_answer_in_under_50ms_at_p99_while_every_child_is_busy(
    live_stack: LiveStack, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    # Given a worker whose two children both burn CPU in long tasks
    worker, port, _ = probed_worker(live_stack, concurrency=2)
    markers = [tmp_path / f"started-{n}" for n in range(2)]
    with live_stack.producer() as client:
        for marker in markers:
            live_stack.send(client, SPIN, 60, str(marker))
    wait_until(lambda: all(m.exists() for m in markers), 30, 0.05, "both children busy")

    # When /livez and /readyz are asked 200 times in turn
    timings, codes = [], []
    for n in range(200):
        started = time.perf_counter()
        codes.append(status(port, "/livez" if n % 2 else "/readyz"))
        timings.append(time.perf_counter() - started)

    # Then every answer is 200, the 99th percentile under 50 ms
    p50 = statistics.median(timings) * 1000
    p99 = statistics.quantiles(timings, n=100)[98] * 1000
    figure(
        f"PROBES: 200 requests with both children busy: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms"
    )
    assert codes == [200] * 200
    assert p99 < 50
    assert worker.running()


def test_livez_turns_503_within_10s_of_a_blocked_main_loop_and_200_once_it_turns(
    live_stack: LiveStack, figure: Callable[[str], None]
) -> None:
    # Given a worker alive and ready
    worker, port, _ = probed_worker(live_stack, concurrency=1)
    assert status(port, "/livez") == 200

    # When a handler in its main process blocks the event loop for 12 seconds
    with live_stack.producer() as client:
        live_stack.send(client, BLOCK_MAIN_LOOP, 12)
        sent = time.monotonic()
    # Then /livez turns 503 within 10 seconds (the server thread still answers meanwhile)
    to_503 = seconds_until(port, "/livez", 503, 10)
    _, body = ask(port, "/livez")
    # And turns 200 again once the loop turns
    seconds_until(port, "/livez", 200, 10)
    blocked_for = time.monotonic() - sent
    figure(
        f"PROBES: main loop blocked 12s: /livez 503 after {to_503:.1f}s "
        f"(last tick {body['last_tick_seconds_ago']:.1f}s ago), 200 again "
        f"{blocked_for - 12:.1f}s after the block ended"
    )
    assert body["alive"] is False
    assert worker.running()


def test_readyz_turns_503_within_1s_of_sigterm_while_livez_stays_200_until_exit(
    live_stack: LiveStack, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    # Given a worker running a task that lasts 5 more seconds
    worker, port, _ = probed_worker(live_stack, concurrency=1)
    marker = tmp_path / "started"
    with live_stack.producer() as client:
        live_stack.send(client, SPIN, 5, str(marker))
    wait_until(marker.exists, 30, 0.05, "the task started")

    # When it gets SIGTERM (warm shutdown: the running task finishes)
    worker.proc.send_signal(signal.SIGTERM)
    to_503 = seconds_until(port, "/readyz", 503, 1)
    _, body = ask(port, "/readyz")

    # Then /readyz is 503 within a second, and /livez stays 200 until the process exits
    livez = []
    while worker.running():
        try:
            livez.append(status(port, "/livez"))
        except GONE:  # the process is exiting: its server is gone
            break
        time.sleep(0.1)
    exit_code = worker.proc.wait(30)
    figure(
        f"PROBES: SIGTERM: /readyz 503 after {to_503 * 1000:.0f} ms; /livez 200 on all "
        f"{len(livez)} asks during the warm shutdown"
    )
    assert body["checks"]["consumer"] == "shutting down"
    assert livez
    assert set(livez) == {200}
    assert exit_code == 0
    assert "succeeded" in worker.log()


def test_readyz_turns_503_when_messages_wait_but_nothing_is_consumed(
    live_stack: LiveStack, figure: Callable[[str], None]
) -> None:
    # Given a worker with WORKER_STALL_SECONDS=3 that stops consuming its queue but stays
    # connected (celery #8030), and messages waiting in that queue
    worker, port, _ = probed_worker(live_stack, concurrency=1, WORKER_STALL_SECONDS="3")
    with live_stack.producer() as client:
        client.control.cancel_consumer(live_stack.queue, destination=[worker.node], reply=True)
        for _ in range(3):
            live_stack.send(client, SPIN, 0)
        queued = time.monotonic()

        # Then /readyz turns 503 once nothing has come in for 3 seconds, saying why
        wait_until(lambda: status(port, "/readyz") == 503, 10, 0.05, "/readyz 503")
        to_503 = time.monotonic() - queued
        _, body = ask(port, "/readyz")
        assert status(port, "/livez") == 200

        # And 200 again once the worker consumes
        client.control.add_consumer(live_stack.queue, destination=[worker.node], reply=True)
        to_200 = seconds_until(port, "/readyz", 200, 10)
    figure(
        f"PROBES: connected but not consuming (WORKER_STALL_SECONDS=3): /readyz 503 "
        f"{to_503:.1f}s after the messages were queued, 200 {to_200:.1f}s after consuming again"
    )
    assert body["checks"]["consuming"].startswith("stalled: 3 messages wait")
    assert body["checks"]["consumer"] == "attached"
    assert 3 <= to_503 < 6


def test_a_port_in_use_logs_one_error_and_the_worker_runs_without_probes(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    # Given another process (another worker on this host) listening on the port
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen()

        # When a worker starts with WORKER_HTTP_PORT set to that port
        worker = live_stack.start_worker(
            concurrency=1,
            extra_args=["-I", PROBE_TASKS],
            env={"WORKER_HTTP_PORT": str(port)},
        )
        marker = tmp_path / "ran"
        with live_stack.producer() as client:
            live_stack.send(client, SPIN, 0, str(marker))

        # Then it runs tasks all the same, serving no probes, and says so in one ERROR line
        wait_until(marker.exists, 30, 0.05, "the task ran")
    errors = [line for line in worker.log().splitlines() if "ERROR/" in line]
    assert len(errors) == 1, errors
    assert f"probes off: cannot listen on 0.0.0.0:{port}" in errors[0]
    assert listening_ports(worker.pid) == set()
    assert worker.running()


def test_port_0_turns_the_probes_off(live_stack: LiveStack) -> None:
    # Given a worker with WORKER_HTTP_PORT=0
    worker = live_stack.start_worker(concurrency=1, env={"WORKER_HTTP_PORT": "0"})

    # Then it listens on no port, and `worker health` exits 1 saying why
    assert listening_ports(worker.pid) == set()
    exit_code, _, output = health({**live_stack.env, "WORKER_HTTP_PORT": "0"})
    assert exit_code == 1
    assert "probes are off (WORKER_HTTP_PORT=0)" in output
