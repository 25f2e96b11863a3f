"""Process and port helpers for the throwaway servers: pid files, /proc, free ports, polling."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


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


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
