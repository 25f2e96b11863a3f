"""Is a PostgreSQL or Redis server answering at a URL, and if not, why not (one short reason)."""

from __future__ import annotations

import socket
import struct
from urllib.parse import unquote, urlsplit


def _connect_problem(error: OSError) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    return error.strerror.lower() if error.strerror else type(error).__name__


def postgres_problem(url: str, timeout: float = 2.0) -> str | None:
    """None if a PostgreSQL server answers an SSLRequest at the URL's host and port, else why."""
    try:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 5432)
    except ValueError as error:
        return f"malformed URL ({error})"
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest; the answer is S or N
            answer = sock.recv(1)
    except OSError as error:
        return _connect_problem(error)
    return None if answer in (b"S", b"N") else "not a PostgreSQL server"


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if a PostgreSQL server answers an SSLRequest at the URL's host and port."""
    return postgres_problem(url, timeout) is None


def redis_ping_problem(
    host: str, port: int, user: str | None, password: str | None, timeout: float
) -> str | None:
    """None if Redis at host:port answers PING (after AUTH with a password), else why not."""
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
    except OSError as error:
        return _connect_problem(error)
    refused = next((reply for reply in replies if reply.startswith(b"-")), None)
    if refused is not None:
        return refused[1:].decode(errors="replace").strip() or "refused"
    return None if replies[-1].startswith(b"+PONG") else "not a Redis server"


def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """None if a Redis server at the URL answers PING (after AUTH), else why not."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    except ValueError as error:
        return f"malformed URL ({error})"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return redis_ping_problem(host, port, user, password, timeout)


def redis_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if a Redis server at the URL answers PING (after AUTH when the URL has a password)."""
    return redis_problem(url, timeout) is None
