"""What the probe tests load into their workers (`-I`), and how they ask the probes.

    stack.start_worker(extra_args=["-I", PROBE_TASKS], env={"WORKER_HTTP_PORT": str(port)})

`SPIN` keeps a child busy burning CPU; the receipt of a `BLOCK_MAIN_LOOP` message blocks the
worker's main process (its event loop) for the seconds it carries, as a handler that hangs would.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.signals import task_received

from worker.development.live import wait_until

PROBE_TASKS = "tests.live.probe_tasks"
SPIN = "tests.probes.spin"
BLOCK_MAIN_LOOP = "tests.probes.block_main_loop"


@shared_task(name=SPIN)
def spin(seconds: float, started_marker: str | None = None) -> None:
    """Burn CPU in the pool child for `seconds`, after creating `started_marker` (if given)."""
    if started_marker:
        Path(started_marker).touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@shared_task(name=BLOCK_MAIN_LOOP)
def block_main_loop(seconds: float) -> None:
    """Nothing to do in the child: the main process stood still when it received the message."""


@task_received.connect
def _block_on_receipt(request: Any, **_: Any) -> None:
    if request.name == BLOCK_MAIN_LOOP:
        time.sleep(float(request.args[0]))


def ask(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET `path` from the worker's probes on 127.0.0.1:`port`: status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else {}
    finally:
        connection.close()


# What asking a probe raises while its server goes away: refused, reset, or cut mid-answer.
GONE = (OSError, http.client.HTTPException)


def status(port: int, path: str) -> int:
    return ask(port, path)[0]


def seconds_until(port: int, path: str, expected: int, timeout: float) -> float:
    """Poll `path` every 50 ms until it answers `expected`; the seconds it took."""
    started = time.monotonic()
    what = f"{path} to answer {expected}"
    wait_until(lambda: status(port, path) == expected, timeout, 0.05, what, ignore=GONE)
    return time.monotonic() - started
