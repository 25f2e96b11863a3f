"""Run the example: the API on uvicorn, and a prefork worker with beat (which relays the outbox).

Both run as children of this process, each in a process group of its own; SIGINT (Ctrl-C),
SIGTERM or SIGHUP here, or either child exiting, stops both (the worker with a warm shutdown),
and nothing outlives this process, not even after a SIGKILL of it (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import worker

HERE = Path(__file__).resolve().parent
# Both processes start from the project root, where `celery -A worker.app` finds celeryconfig.
PROJECT_ROOT = Path(worker.__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 60  # the worker's warm shutdown lets running tasks finish


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel sends it SIGTERM when this process dies.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(command: list[str]) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own (so it can be stopped with its children)."""
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, start_new_session=True, preexec_fn=_die_with_parent
    )


def stop(processes: list[subprocess.Popen[bytes]], hurry: Callable[[], bool]) -> None:
    """SIGTERM every process group and wait; SIGKILL what is left after GRACE_SECONDS, or at
    once when `hurry()` turns true (a second Ctrl-C)."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(p.poll() is None for p in processes):
        if hurry() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for process in processes:
        # Whatever is left of the group (a stuck leader, a pool child or beat outliving it) goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    default_schedule = Path(tempfile.gettempdir()) / "celerybeat-schedule-blog-example"
    parser.add_argument("--schedule", default=str(default_schedule), help="beat's state file")
    options = parser.parse_args()

    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        received.append(signum)
        stopping.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)

    python = [sys.executable, "-m"]
    worker_command = [*python, "celery", "-A", "worker.app", "worker", "--beat", "-P", "prefork"]
    worker_command += ["-c", "2", "-l", "INFO", "--schedule", str(Path(options.schedule).resolve())]
    api_command = [*python, "uvicorn", "blog_api:app", "--app-dir", str(HERE)]
    api_command += ["--host", options.host, "--port", str(options.port)]
    processes = [start(worker_command), start(api_command)]
    print(f"API on http://{options.host}:{options.port} (try /docs); Ctrl-C stops both", flush=True)
    names = dict(zip(processes, ("worker", "API"), strict=True))
    exited = None
    try:
        while exited is None and not stopping.wait(0.5):
            exited = next((p for p in processes if p.poll() is not None), None)
    finally:
        if exited is not None:
            print(f"the {names[exited]} exited with status {exited.returncode}; stopping")
        stop(processes, hurry=lambda: len(received) > 1)
    return 0 if exited is None else 1


if __name__ == "__main__":
    sys.exit(main())
