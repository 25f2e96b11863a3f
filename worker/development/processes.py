"""Process and port helpers for servers, workers and tests: polling, commands, pid files, ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

# Where `celery -A worker.app` finds celeryconfig: the checkout, or site-packages when installed.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class TimedOut(AssertionError):
    """`wait_until` gave up: an assertion in a test, a ServerError to a server's caller."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    An exception of a type in `ignore` counts as "not yet" (a server in the middle of a restart).
    After `timeout` seconds, fails with TimedOut (an AssertionError) naming `what` and the last
    value seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except ignore as error:
            value, last = None, error
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise TimedOut(
                f"timed out after {timeout}s waiting for {what or condition} (last: {last!r})"
            )
        time.sleep(interval)


def run_python(
    env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python *args` (this interpreter) in the project root with `env`, its output captured.

    The output is UTF-8 text in which other bytes are kept as surrogates: a binary dump reads
    back with `.encode(errors="surrogateescape")`. Never raises for the exit status: callers
    assert on it, showing stderr.
    """
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
        timeout=timeout,
        check=False,
    )


def run_cli(
    env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m worker *args`, the operators' command, as `run_python` runs it."""
    return run_python(env, "-m", "worker", *args, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a server's log, headed by its path, for error messages."""
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        text = f"(no log: {exc})"
    return f"--- tail of {path} ---\n{text}"


def read_int(path: Path, line: int = 0) -> int | None:
    """An integer line of a pid or port file (postmaster.pid: the pid on 0, the port on 3)."""
    try:
        return int(path.read_text().splitlines()[line])
    except (OSError, ValueError, IndexError):
        return None


def proc_stat(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; [] if unknown."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def is_zombie(pid: int) -> bool:
    """Dead but not yet reaped by its parent (for a daemon: init, which may take a while)."""
    return proc_stat(pid)[:1] == ["Z"]


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)
