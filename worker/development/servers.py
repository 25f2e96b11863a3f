"""Throwaway PostgreSQL and Redis servers, for development (`make services`) and fault tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote

from worker.development.binaries import find_postgres_bindir, find_redis_server
from worker.development.processes import (
    TimedOut,
    free_port,
    is_zombie,
    log_tail,
    pid_alive,
    proc_stat,
    read_int,
    wait_until,
)
from worker.development.reachability import redis_ping_problem


class ServerError(RuntimeError):
    """A server failed to start, stop or become ready."""


class LocalServer:
    """What PostgresServer and RedisServer share: base_dir, port, restart, waiting, `with`."""

    name = "server"
    poll_every = 0.05  # seconds between two `answers`
    log_file: Path

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

    def answers(self) -> bool:
        """True once the server accepts clients."""
        raise NotImplementedError

    def exited(self) -> bool:
        """True once waiting for the server to answer is pointless: it is gone."""
        return not self.is_running()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until the server `answers`; a ServerError with its log's tail if it exits first
        or `timeout` seconds pass."""

        def settled() -> str | None:
            return "up" if self.answers() else "exited" if self.exited() else None

        with contextlib.suppress(TimedOut):
            if wait_until(settled, timeout, self.poll_every) == "up":
                return
        message = f"{self.name} is not answering on port {self.port}"
        raise ServerError(f"{message}\n{log_tail(self.log_file)}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PostgresServer(LocalServer):
    """A throwaway PostgreSQL cluster: data in `base_dir/data`, log in `base_dir/postgres.log`."""

    name = "PostgreSQL"
    poll_every = 0.1

    def __init__(
        self, base_dir: Path, port: int | None = None, *, max_connections: int = 200
    ) -> None:
        super().__init__(base_dir, port)
        self.max_connections = max_connections
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
            self.port = read_int(self.data_dir / "postmaster.pid", 3) or self.port
            return
        self._prepare_dirs()
        locks = [self.data_dir / "postmaster.pid", self.base_dir / f".s.PGSQL.{self.port}.lock"]
        for lock in locks:
            if (pid := read_int(lock)) is not None and is_zombie(pid):
                lock.unlink()  # postgres would take the unreaped, dead postmaster for a live one
        if not self.data_dir.exists():
            flags = ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]
            init = self._run("initdb", "-D", self.data_dir, *flags)
            if init.returncode != 0:
                raise ServerError(f"initdb failed for {self.data_dir}:\n{init.stdout}{init.stderr}")
        sockdir = str(self.base_dir) if len(str(self.base_dir)) < 90 else ""  # sun_path limit
        opts = (
            f"-p {self.port} -k {shlex.quote(sockdir)} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={self.max_connections}"
        )
        ctl = self._run(
            "pg_ctl", "start", "-w", "-D", self.data_dir, "-l", self.log_file, "-o", opts
        )
        if ctl.returncode != 0:
            message = f"PostgreSQL failed to start on port {self.port}: {ctl.stderr.strip()}"
            raise ServerError(f"{message}\n{log_tail(self.log_file)}")
        self.wait_ready()

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        if self.is_running():
            # A new pytest session resets its 0700 base dir; pg_ctl (user postgres) must get in.
            self._prepare_dirs()
            ctl = self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", self.data_dir)
            if ctl.returncode != 0 and self.is_running():
                message = f"PostgreSQL did not stop: {ctl.stderr}"
                raise ServerError(f"{message}\n{log_tail(self.log_file)}")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash), then wait until its orphaned backends are gone."""
        pid = read_int(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return
        procs = Path("/proc").glob("[0-9]*")  # Linux; elsewhere only the postmaster is awaited
        pids = [pid, *(int(p.name) for p in procs if proc_stat(p.name)[1:2] == [str(pid)])]
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimedOut):  # a start that follows says what still holds on
            wait_until(lambda: not any(map(pid_alive, pids)), 15)

    def is_running(self) -> bool:
        pid = read_int(self.data_dir / "postmaster.pid")
        return pid is not None and pid_alive(pid)

    def answers(self) -> bool:
        """pg_isready: the server accepts connections."""
        flags = f"-q -h 127.0.0.1 -p {self.port} -U postgres -d postgres -t 1".split()
        return self._run("pg_isready", *flags).returncode == 0


class RedisServer(LocalServer):
    """A throwaway redis-server: a child process we own, or a daemon (for the CLI)."""

    name = "redis-server"

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
        binary = find_redis_server()
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
            raise ServerError(f"redis-server exited with status {rc}\n{log_tail(self.log_file)}")
        self.wait_ready()

    def _signal(self, sig: signal.Signals) -> None:
        pid = self._proc.pid if self._proc is not None else read_int(self.pid_file)
        if pid is not None and self.is_running():
            os.kill(pid, sig)
            try:
                wait_until(lambda: not self.is_running(), 10)
            except TimedOut:
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
        pid = read_int(self.pid_file)
        return pid is not None and pid_alive(pid)

    def answers(self) -> bool:
        """A raw-socket PING (after AUTH if there is a password) is answered."""
        return redis_ping_problem("127.0.0.1", self.port, None, self.password, 0.5) is None

    def exited(self) -> bool:
        # A daemon's pid file may not be written yet: only a child of ours is known to be gone.
        return self._proc is not None and self._proc.poll() is not None
