"""Where the PostgreSQL and Redis server binaries are, and how to install them when they are not."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

PG_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with "
    "`apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql` (macOS)."
)
REDIS_HINT = (
    "redis-server not found; install it with "
    "`apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)."
)


class MissingBinary(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


def find_postgres_bindir() -> Path:
    """Find initdb/pg_ctl/postgres via `pg_config --bindir`, /usr/lib/postgresql/*/bin, PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cmd = [pg_config, "--bindir"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
    by_version = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates += reversed(by_version)
    if initdb := shutil.which("initdb"):
        candidates += [Path(initdb).parent, Path(initdb).resolve().parent]
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise MissingBinary(PG_HINT)


def find_redis_server() -> str:
    """The path of redis-server on PATH."""
    if (binary := shutil.which("redis-server")) is None:
        raise MissingBinary(REDIS_HINT)
    return binary
