"""Probes served by the worker's main process: `/livez`, `/readyz` and `/metrics`.

A thread of the main process serves WORKER_HTTP_HOST:WORKER_HTTP_PORT (port 0: off) and answers
from state held in memory, so a probe starts no process and waits on no server:

- `/livez`: 200 while Celery's event loop ticks (a timer entry on the consumer's hub, every
  second; while the consumer waits to reconnect to the broker, each second it waits), 503 once
  no tick came for LIVENESS_TIMEOUT seconds. It never asks Redis or PostgreSQL, so their outage
  restarts nothing; during a warm shutdown it stays 200.
- `/readyz`: 200 when the consumer is attached, Redis and PostgreSQL answered their latest
  check, the worker is not shutting down, and it is not stalled (messages wait in its queues,
  no child runs a task and nothing came in for WORKER_STALL_SECONDS). Threads ask Redis (PING
  and the queues' lengths) every half second and PostgreSQL every two seconds, on a connection
  opened and closed each time (`worker.operations.readiness`): the main process keeps none.
- `/metrics`: what the metrics source returns, 404 while there is none. The metrics module
  registers it with `set_metrics_source(exposition)`, `exposition() -> (body, content type)`.

`python -m worker health` asks these for exec probes (`worker.operations.health_cli`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import bootsteps
from celery.worker import state as celery_state

from worker.config import Settings
from worker.operations.readiness import Check, postgres_check, redis_check

log = logging.getLogger(__name__)

TICK_INTERVAL = 1.0
LIVENESS_TIMEOUT = 6.0  # ticks come every second; 503 comes 5-6 s into a blocked loop
REDIS_INTERVAL = 0.5
POSTGRES_INTERVAL = 2.0  # each check is a new connection: one every two seconds per node

MetricsSource = Callable[[], tuple[bytes, str]]


class Probes:
    """What the probes report: the event loop's ticks, the consumer, the checks."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.last_tick = now  # from start-up: the consumer is not running yet
        self.ticking = True  # False: no event loop to watch (solo and threads pools)
        self.attached = False
        self.shutting_down = False
        self.last_received = now
        self.queues: tuple[str, ...] = ()
        self.waiting = 0
        self.waiting_since: float | None = None  # messages wait and no child runs a task
        self.stall_seconds = 60.0
        self.checks: list[Check] = []
        self.metrics: MetricsSource | None = None

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.last_tick
        alive = self.shutting_down or not self.ticking or age < LIVENESS_TIMEOUT
        return alive, {"alive": alive, "last_tick_seconds_ago": round(age, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        checks: dict[str, str] = {}
        ready = True
        if self.shutting_down:
            ready, checks["consumer"] = False, "shutting down"
        elif not self.attached:
            ready, checks["consumer"] = False, "not attached"
        else:
            checks["consumer"] = "attached"
        for check in self.checks:
            ok, checks[check.what] = check.status(now)
            ready = ready and ok
        since = self.waiting_since
        idle_for = now - max(since, self.last_received) if since is not None else 0.0
        if idle_for >= self.stall_seconds:
            ready = False
            checks["consuming"] = (
                f"stalled: {self.waiting} messages wait, no child runs a task, "
                f"nothing received for {idle_for:.0f}s"
            )
        return ready, {"ready": ready, "checks": checks}

    def queue_length(self, waiting: int) -> None:
        self.waiting = waiting
        if not waiting or celery_state.active_requests:
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = time.monotonic()


probes = Probes()


def main_loop_ticked() -> None:
    """The main process's loop is turning (a hub timer entry, a wait to reconnect)."""
    probes.last_tick = time.monotonic()


def task_received() -> None:
    probes.last_received = time.monotonic()


def shutting_down() -> None:
    """Warm or cold shutdown began: stop being ready, stay alive until the process exits."""
    probes.shutting_down = True


def set_metrics_source(source: MetricsSource | None) -> None:
    """Serve `source()` (body, content type) at /metrics; None: 404."""
    probes.metrics = source


class ConsumerProbe(bootsteps.StartStopStep):
    """A consumer bootstep: attached from the event loop's first turn after each (re)start."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.entry: Any = None

    def start(self, parent: Any) -> None:
        probes.queues = tuple(queue.name for queue in parent.task_consumer.queues)
        hub = parent.hub
        if hub is None:
            probes.ticking, probes.attached = False, True
            return

        def attached() -> None:
            main_loop_ticked()
            if not probes.attached:
                probes.attached, probes.last_received = True, time.monotonic()

        hub.call_soon(attached)
        # Timer entries added here belong to this connection: Celery cancels them on its loss.
        self.entry = hub.call_repeatedly(TICK_INTERVAL, attached)

    def stop(self, parent: Any) -> None:
        probes.attached = False
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics" and probes.metrics is not None:
            try:
                body, content_type = probes.metrics()
            except Exception:
                log.exception("the metrics source failed")
                self._send(500, b"metrics unavailable\n", "text/plain; charset=utf-8")
            else:
                self._send(200, body, content_type)
            return
        answer = {"/livez": probes.liveness, "/readyz": probes.readiness}.get(path)
        if answer is None:
            self._send(404, b'{"error": "not found"}\n', "application/json")
            return
        ok, report = answer()
        self._send(200 if ok else 503, json.dumps(report).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds would bury the worker's own lines


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(settings: Settings) -> ThreadingHTTPServer | None:
    """Start the probes' server and checks in this (the main) process; None when off or failed.

    A port in use (another worker on this host) logs one ERROR line; the worker runs on
    without probes.
    """
    host, port = settings.worker_http_host, settings.worker_http_port
    if port == 0:
        log.info("probes off (WORKER_HTTP_PORT=0)")
        return None
    try:
        server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    except OSError as error:
        log.error(
            "probes off: cannot listen on %s:%s (%s); give each worker on this host its own "
            "WORKER_HTTP_PORT, or 0",
            host,
            port,
            error.strerror or error,
        )
        return None
    # Pool children and beat are forked from this process: they drop their copy of the socket.
    os.register_at_fork(after_in_child=server.socket.close)
    probes.stall_seconds = float(settings.worker_stall_seconds)
    main_loop_ticked()
    redis_answers = redis_check(settings, lambda: probes.queues, probes.queue_length)
    probes.checks = [
        Check("redis", redis_answers, REDIS_INTERVAL),
        Check("postgres", postgres_check(settings), POSTGRES_INTERVAL),
    ]
    for check in probes.checks:
        check.start()
    threading.Thread(target=server.serve_forever, name="probes-http", daemon=True).start()
    log.info("probes on http://%s:%s (/livez, /readyz, /metrics)", host, port)
    return server


def stop(server: ThreadingHTTPServer) -> None:
    """Stop serving and checking (tests; a worker's threads end with its process)."""
    server.shutdown()
    server.server_close()
    for check in probes.checks:
        check.stopping.set()
    probes.checks = []
