"""`make services`: use the configured PostgreSQL and Redis, or start project-local ones.

Project-local servers stand in only for a URL nobody chose: DATABASE_URL or REDIS_URL left
unset (the default local one), or the URL of the project-local server itself. A URL the user
set is the one producers use, so when it does not answer, `ensure` fails saying why instead
of pointing the worker at another server.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from worker.config import ConfigError, load_settings, mask_url
from worker.development.binaries import MissingBinary
from worker.development.processes import free_port, port_in_use, read_int
from worker.development.reachability import postgres_problem, redis_problem
from worker.development.servers import LocalServer, PostgresServer, RedisServer, ServerError


class ServiceUnreachable(RuntimeError):
    """A URL the user set does not answer; the message is one line saying which and why."""


@dataclass(frozen=True)
class Wanted:
    """A service the settings ask for: its variable, URL, and whether the user set that URL."""

    variable: str
    url: str
    user_set: bool

    @property
    def service(self) -> str:
        return "postgres" if self.variable == "DATABASE_URL" else "redis"


def ensure_service(wanted: Wanted, server: LocalServer, root: Path) -> str:
    """The URL to use for `wanted`: its own if it answers, else a started project-local server's.

    Raises `ServiceUnreachable` when the URL the user set does not answer.
    """
    name = wanted.service
    problem = (postgres_problem if name == "postgres" else redis_problem)(wanted.url)
    if problem is None:
        print(f"{name}: using {mask_url(wanted.url)}", file=sys.stderr)
        return wanted.url
    known_local = read_int(root / f"{name}.port") is not None and wanted.url == server.url
    if wanted.user_set and not known_local:
        raise ServiceUnreachable(
            f"{wanted.variable}={mask_url(wanted.url)} is not reachable ({problem}); it is set, "
            f"so no project-local server stands in: start that server or unset {wanted.variable}"
        )
    running = server.is_running()
    if not running and port_in_use(server.port):  # a stopped server gets its old port if free
        server.port = free_port()
    server.start()  # for a running server: no-op
    (root / f"{name}.port").write_text(f"{server.port}\n")
    action = "using the already running" if running else "started a"
    message = f"{name}: {mask_url(wanted.url)} was not reachable; {action} project-local server at"
    print(f"{message} {mask_url(server.url)} (data in {server.base_dir})", file=sys.stderr)
    return server.url


def _servers(root: Path) -> dict[str, LocalServer]:
    """The project-local servers, on the ports recorded by an earlier `ensure`, if any."""
    return {
        "postgres": PostgresServer(root / "postgres", read_int(root / "postgres.port")),
        "redis": RedisServer(root / "redis", read_int(root / "redis.port"), daemonize=True),
    }


def _wanted() -> list[Wanted]:
    settings = load_settings()  # the environment and .env, as the worker will read them
    return [
        Wanted(variable, secret.get_secret_value(), field in settings.model_fields_set)
        for variable, field, secret in (
            ("DATABASE_URL", "database_url", settings.database_url),
            ("REDIS_URL", "redis_url", settings.redis_url),
        )
    ]


def _write_env(env_file: Path, in_use: dict[str, str]) -> None:
    # Quoted (only if needed) as the Makefile sources it; 0600, as URLs may carry passwords.
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{variable}={shlex.quote(url)}\n" for variable, url in in_use.items())


def ensure(root: Path, env_file: Path | None) -> int:
    """Print `export` lines for the URLs in use (and write them to `env_file`); exit status."""
    servers = _servers(root)
    in_use: dict[str, str] = {}
    unreachable: list[str] = []
    try:
        wanted = _wanted()
        root.mkdir(parents=True, exist_ok=True)
        for each in wanted:
            try:
                in_use[each.variable] = ensure_service(each, servers[each.service], root)
            except ServiceUnreachable as exc:
                unreachable.append(f"error: {exc}")
    except (ConfigError, MissingBinary) as exc:
        print("\n".join(f"error: {line}" for line in str(exc).splitlines()), file=sys.stderr)
        return 2
    except (ServerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if unreachable:
        print("\n".join(unreachable), file=sys.stderr)
        return 2
    print("\n".join(f"export {variable}={shlex.quote(url)}" for variable, url in in_use.items()))
    if env_file is not None:
        _write_env(env_file, in_use)
    return 0


def stop(root: Path, env_file: Path | None) -> int:
    """Stop the project-local servers; drop `env_file` if it points at one of them."""
    servers = _servers(root)
    for name, server in servers.items():
        if server.is_running():
            server.stop()
            print(f"{name}: stopped the project-local server", file=sys.stderr)
    if env_file is not None and env_file.exists():
        local = {server.url for name, server in servers.items() if (root / f"{name}.port").exists()}
        if any(url in local for url in _env_values(env_file)):
            env_file.unlink()
            print(f"removed {env_file}: it named the stopped servers", file=sys.stderr)
    return 0


def _env_values(env_file: Path) -> list[str]:
    values = []
    for line in env_file.read_text().splitlines():
        _, _, value = line.partition("=")
        values.extend(shlex.split(value))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.development.services",
        description="Use the configured PostgreSQL and Redis, or start project-local ones.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="use the configured services, else start local ones")
    commands.add_parser("stop", help="stop the project-local servers")
    for sub in commands.choices.values():
        sub.add_argument("--dir", type=Path, default=Path(".local"), help="default: .local")
        sub.add_argument("--env-file", type=Path, help="the DATABASE_URL/REDIS_URL file to keep")
    args = parser.parse_args(argv)
    command = ensure if args.command == "ensure" else stop
    return command(args.dir.absolute(), args.env_file)


if __name__ == "__main__":
    sys.exit(main())
