"""Throwaway and project-local PostgreSQL/Redis servers for development and tests."""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
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


class ServerError(RuntimeError):
    """A server failed to start, stop or become ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mask_url(url: str) -> str:
    """Return `url` with its password (userinfo or `password=` query) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            pairs = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
            query = urlencode(pairs, safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "***"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        text = f"(no log: {exc})"
    return f"--- tail of {path} ---\n{text}"


def _read_int(path: Path, line: int = 0) -> int | None:
    """An integer line of a pid or port file (postmaster.pid: the pid on 0, the port on 3)."""
    try:
        return int(path.read_text().splitlines()[line])
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; [] if unknown."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def _is_zombie(pid: int) -> bool:
    """Dead but not yet reaped by its parent (for a daemon: init, which may take a while)."""
    return _proc_stat(pid)[:1] == ["Z"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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


class _Server:
    """What PostgresServer and RedisServer share: base_dir, port, restart, `with`."""

    def __init__(self, base_dir: Path, port: int | None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def is_running(self) -> bool:
        raise NotImplementedError

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster: data in `base_dir/data`, log in `base_dir/postgres.log`."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        super().__init__(base_dir, port)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self._bindir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, binary: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        user = group = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user, group = "postgres", pwd.getpwnam("postgres").pw_gid
        return subprocess.run(
            [str(self._bindir / binary), *map(str, args)],
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user else None,
        )

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerError("running as root needs a `postgres` system user") from None
        os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        self.base_dir.chmod(0o755)
        tmp = Path(tempfile.gettempdir()).resolve()
        for parent in self.base_dir.parents:  # e.g. the 0700 dirs of pytest and mkdtemp
            mode = parent.stat().st_mode
            if not mode & 0o001 and tmp in parent.parents:
                parent.chmod(mode | 0o001)
            elif not mode & 0o001:
                raise ServerError(f"{parent} is not traversable by user postgres; chmod o+x it")

    def start(self) -> None:
        """Start the server (running initdb the first time); if it is running, adopt its port."""
        if self.is_running():
            self.port = _read_int(self.data_dir / "postmaster.pid", 3) or self.port
            return
        self._prepare_dirs()
        locks = [self.data_dir / "postmaster.pid", self.base_dir / f".s.PGSQL.{self.port}.lock"]
        for lock in locks:
            if (pid := _read_int(lock)) is not None and _is_zombie(pid):
                lock.unlink()  # postgres would take the unreaped, dead postmaster for a live one
        if not self.data_dir.exists():
            flags = ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]
            init = self._run("initdb", "-D", self.data_dir, *flags)
            if init.returncode != 0:
                raise ServerError(f"initdb failed for {self.data_dir}:\n{init.stdout}{init.stderr}")
        sockdir = str(self.base_dir) if len(str(self.base_dir)) < 90 else ""  # sun_path limit
        opts = (
            f"-p {self.port} -k {shlex.quote(sockdir)} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        ctl = self._run(
            "pg_ctl", "start", "-w", "-D", self.data_dir, "-l", self.log_file, "-o", opts
        )
        if ctl.returncode != 0:
            message = f"PostgreSQL failed to start on port {self.port}: {ctl.stderr.strip()}"
            raise ServerError(f"{message}\n{_tail(self.log_file)}")
        self.wait_ready()

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        if self.is_running():
            # A new pytest session resets its 0700 base dir; pg_ctl (user postgres) must get in.
            self._prepare_dirs()
            ctl = self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", self.data_dir)
            if ctl.returncode != 0 and self.is_running():
                raise ServerError(f"PostgreSQL did not stop: {ctl.stderr}\n{_tail(self.log_file)}")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash), then wait until its orphaned backends are gone."""
        pid = _read_int(self.data_dir / "postmaster.pid")
        if pid is None or not _pid_alive(pid):
            return
        procs = Path("/proc").glob("[0-9]*")  # Linux; elsewhere only the postmaster is awaited
        pids = [pid, *(int(p.name) for p in procs if _proc_stat(p.name)[1:2] == [str(pid)])]
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(map(_pid_alive, pids)), 15)

    def is_running(self) -> bool:
        pid = _read_int(self.data_dir / "postmaster.pid")
        return pid is not None and _pid_alive(pid)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll with pg_isready until the server accepts connections."""
        flags = f"-q -h 127.0.0.1 -p {self.port} -U postgres -d postgres -t 1".split()
        deadline = time.monotonic() + timeout
        while self._run("pg_isready", *flags).returncode != 0:
            if time.monotonic() > deadline or not self.is_running():
                message = f"PostgreSQL is not accepting connections on port {self.port}"
                raise ServerError(f"{message}\n{_tail(self.log_file)}")
            time.sleep(0.1)


class RedisServer(_Server):
    """A throwaway redis-server: a child process we own, or a daemon (for the CLI)."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        password: str | None = None,
        *,
        daemonize: bool = False,
    ) -> None:
        super().__init__(base_dir, port)
        self.password = password
        self.daemonize = daemonize
        self.log_file = self.base_dir / "redis.log"
        self.pid_file = self.base_dir / "redis.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.is_running():
            return
        if (binary := shutil.which("redis-server")) is None:
            raise MissingBinary(REDIS_HINT)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        conf = self.base_dir / "redis.conf"  # 0600: keeps the password off the command line
        conf.unlink(missing_ok=True)
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            if self.password is not None:
                escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
                fh.write(f'requirepass "{escaped}"\n')
        daemonize = "yes" if self.daemonize else "no"
        cmd = [binary, str(conf), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--daemonize", daemonize, "--dir", str(self.base_dir)]
        cmd += ["--pidfile", str(self.pid_file), "--logfile", str(self.log_file)]
        self.pid_file.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:  # config errors go to stderr, not to the logfile
            # A daemon outlives us; its own session keeps it clear of our terminal's Ctrl-C.
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=self.daemonize,
            )
        if not self.daemonize:
            self._proc = proc
        elif rc := proc.wait(30):  # the daemonizing parent exits at once
            raise ServerError(f"redis-server exited with status {rc}\n{_tail(self.log_file)}")
        self.wait_ready()

    def _signal(self, sig: signal.Signals) -> None:
        pid = self._proc.pid if self._proc is not None else _read_int(self.pid_file)
        if pid is not None and self.is_running():
            os.kill(pid, sig)
            if not _wait_until(lambda: not self.is_running(), 10):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        pid = _read_int(self.pid_file)
        return pid is not None and _pid_alive(pid)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll with a raw-socket PING (after AUTH if there is a password)."""
        deadline = time.monotonic() + timeout
        while not _redis_ping("127.0.0.1", self.port, None, self.password, 0.5):
            if time.monotonic() > deadline or (self._proc and self._proc.poll() is not None):
                message = f"redis-server is not answering PING on port {self.port}"
                raise ServerError(f"{message}\n{_tail(self.log_file)}")
            time.sleep(0.05)


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if a PostgreSQL server answers an SSLRequest at the URL's host and port."""
    try:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 5432)
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest; the answer is S or N
            return sock.recv(1) in (b"S", b"N")
    except (OSError, ValueError):
        return False


def _redis_ping(
    host: str, port: int, user: str | None, password: str | None, timeout: float
) -> bool:
    commands = [["AUTH", *([user] if user else []), password]] if password is not None else []
    commands.append(["PING"])
    payload = b""
    for command in commands:
        payload += b"*%d\r\n" % len(command)
        for arg in (word.encode() for word in command):
            payload += b"$%d\r\n%b\r\n" % (len(arg), arg)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(payload)
            with sock.makefile("rb") as reader:
                replies = [reader.readline() for _ in commands]
    except OSError:
        return False
    return replies[-1].startswith(b"+PONG") and not any(r.startswith(b"-") for r in replies)


def redis_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if a Redis server at the URL answers PING (after AUTH when the URL has a password)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    except ValueError:
        return False
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return _redis_ping(host, port, user, password, timeout)


def _ensure(name: str, url: str, server: _Server, root: Path) -> str:
    """The URL to use for `name`: `url` if reachable, else that of a (started) local server."""
    reachable = postgres_reachable if name == "postgres" else redis_reachable
    if reachable(url):
        print(f"{name}: using {mask_url(url)}", file=sys.stderr)
        return url
    running = server.is_running()
    if not running:
        with socket.socket() as probe:  # a stopped server gets its old port back if it is free
            if probe.connect_ex(("127.0.0.1", server.port)) == 0:
                server.port = free_port()
    server.start()  # for a running server: no-op
    (root / f"{name}.port").write_text(f"{server.port}\n")
    action = "using the already running" if running else "started a"
    message = f"{name}: {mask_url(url)} was not reachable; {action} project-local server at"
    print(f"{message} {mask_url(server.url)} (data in {server.base_dir})", file=sys.stderr)
    return server.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.development.services", description=__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure", help="use reachable services, else start local ones")
    ensure.add_argument("--env-file", type=Path, help="also write DATABASE_URL/REDIS_URL here")
    stop = commands.add_parser("stop", help="stop the project-local servers")
    for sub in (ensure, stop):
        sub.add_argument("--dir", type=Path, default=Path(".local"), help="default: .local")
    args = parser.parse_args(argv)
    root: Path = args.dir.absolute()
    servers: dict[str, _Server] = {  # on the ports recorded by an earlier `ensure`, if any
        "postgres": PostgresServer(root / "postgres", _read_int(root / "postgres.port")),
        "redis": RedisServer(root / "redis", _read_int(root / "redis.port"), daemonize=True),
    }
    if args.command == "stop":
        for name, server in servers.items():
            if server.is_running():
                server.stop()
                print(f"{name}: stopped the project-local server", file=sys.stderr)
        return 0
    wanted = {
        "DATABASE_URL": ("postgres", os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        "REDIS_URL": ("redis", os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL),
    }
    in_use: dict[str, str] = {}
    try:
        root.mkdir(parents=True, exist_ok=True)
        for variable, (name, url) in wanted.items():
            in_use[variable] = _ensure(name, url, servers[name], root)
    except MissingBinary as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ServerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = [f"{variable}={shlex.quote(url)}" for variable, url in in_use.items()]
    print("\n".join(f"export {line}" for line in lines))
    if args.env_file is not None:  # quoted (only if needed) as the Makefile sources it
        fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{line}\n" for line in lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
