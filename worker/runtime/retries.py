"""Which failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from sqlalchemy.exc import DBAPIError, OperationalError

from worker.config import Settings
from worker.prepared import OUT_OF_STEP_SQLSTATES

# SQLSTATEs worth another attempt: the same statement can succeed a moment later.
TRANSIENT_SQLSTATES: Final = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57014",  # query_canceled: DB_STATEMENT_TIMEOUT_MS, e.g. a long lock wait
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        # A prepared statement out of step with the server: its connection was replaced.
        *OUT_OF_STEP_SQLSTATES,
    }
)
BACKOFF_BASE_SECONDS: Final = 2.0


def is_transient(error: BaseException) -> bool:
    """True for database errors a retry can fix (lost connections, deadlocks, restarts)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated or isinstance(error, OperationalError):
            return True
        code = getattr(error.orig, "pgcode", None)
        return code in TRANSIENT_SQLSTATES or (code is not None and code.startswith("08"))
    return False


def backoff_bounds(retries: int, cap: float) -> tuple[float, float]:
    """The range the delay before retry `retries + 1` is drawn from: [step / 2, step].

    step = min(cap, BACKOFF_BASE_SECONDS * 2**retries). Keeping half of each step (equal jitter)
    means the default 5 retries span at least 31 s: a database that is down for 10 s is outlasted.
    """
    step = min(cap, BACKOFF_BASE_SECONDS * 2.0 ** min(retries, 64))
    return step / 2, step


def backoff_seconds(retries: int, cap: float) -> float:
    """Exponential backoff with equal jitter: uniform within `backoff_bounds`."""
    low, high = backoff_bounds(retries, cap)
    return random.uniform(low, high)


@dataclass(frozen=True)
class RetryPolicy:
    """TASK_MAX_RETRIES retries of transient errors, TASK_RETRY_BACKOFF_MAX apart at most."""

    max_retries: int
    backoff_max: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.task_max_retries, settings.task_retry_backoff_max)

    def delay(self, retries: int) -> float | None:
        """Seconds to wait before retry `retries + 1`, or None once the retries are used up."""
        if retries >= self.max_retries:
            return None
        return backoff_seconds(retries, self.backoff_max)
