"""What `/readyz` asks Redis and PostgreSQL, from threads of the worker's main process.

Each check runs on its own thread every few seconds, so a probe only reads its latest outcome.
The PostgreSQL check opens a connection of its own and closes it each time (NullPool), named
`<APP_NAME>-readyz:<pid>`: the main process keeps no database connection, and none is forked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import text

from worker.config import Settings
from worker.operations import fail_fast

log = logging.getLogger(__name__)

STALE_AFTER = 5.0  # a check that has not answered for this long counts as failing


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "ok", or the class of the error: a probe's body stays free of hosts and URLs
    at: float


class Check(threading.Thread):
    """Runs `probe` every `interval` seconds until stopped; `status()` reads the latest outcome.

    The first failure, and each recovery, is logged with the error in full.
    """

    def __init__(self, name: str, probe: Callable[[], object], interval: float) -> None:
        super().__init__(name=f"readyz-{name}", daemon=True)
        self.what, self.probe, self.interval = name, probe, interval
        self.outcome = Outcome(False, "not checked yet", time.monotonic())
        self.stopping = threading.Event()

    def run(self) -> None:
        answered: bool | None = None
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.probe()
            except Exception as error:
                if answered is not False:
                    log.warning("readiness: %s does not answer (%s)", self.what, error)
                answered, self.outcome = False, Outcome(False, type(error).__name__, started)
            else:
                if answered is False:
                    log.warning("readiness: %s answers again", self.what)
                answered, self.outcome = True, Outcome(True, "ok", started)
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def status(self, now: float) -> tuple[bool, str]:
        outcome = self.outcome
        if now - outcome.at > STALE_AFTER:
            return False, f"no answer for {now - outcome.at:.0f}s"
        return outcome.ok, outcome.detail


def redis_check(
    settings: Settings, queues: Callable[[], Iterable[str]], waiting: Callable[[int], None]
) -> Callable[[], None]:
    """PING Redis and report how many messages wait in `queues()`, in one round trip."""
    client = fail_fast.redis_client(settings.redis_url.get_secret_value())

    def check() -> None:
        keys = [key for queue in queues() for key in fail_fast.queue_keys(queue)]
        with client.pipeline(transaction=False) as pipe:
            pipe.ping()
            for key in keys:
                pipe.llen(key)
            _, *lengths = pipe.execute()
        waiting(sum(lengths))

    return check


def postgres_check(settings: Settings) -> Callable[[], None]:
    """`SELECT 1` on a connection opened for it and closed after, within about two seconds."""
    engine = fail_fast.postgres_engine(settings, timeout=2, purpose="readyz")

    def check() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check
