"""Base class of every database task: validation, exactly-once effect, retries, dead letters."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Retry
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker import deliveries, ledger
from worker.config import get_settings
from worker.contracts import validate_arguments
from worker.db import session_scope
from worker.deliveries import PoisonMessage
from worker.prepared import OUT_OF_STEP_SQLSTATES

log = logging.getLogger(__name__)

R = TypeVar("R")

# SQLSTATEs worth another attempt: the same statement can succeed a moment later.
_TRANSIENT_SQLSTATES = frozenset(
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


def is_transient(error: BaseException) -> bool:
    """True for database errors a retry can fix (lost connections, deadlocks, restarts)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated or isinstance(error, OperationalError):
            return True
        code = getattr(error.orig, "pgcode", None)
        return code in _TRANSIENT_SQLSTATES or (code is not None and code.startswith("08"))
    return False


BACKOFF_BASE_SECONDS = 2.0


def backoff_bounds(
    retries: int, cap: float, base: float = BACKOFF_BASE_SECONDS
) -> tuple[float, float]:
    """The range the delay before retry `retries + 1` is drawn from: [step / 2, step].

    step = min(cap, base * 2**retries). Keeping half of each step (equal jitter) means the
    default 5 retries span at least 31 s, so a database that is down for 10 s is outlasted.
    """
    step = min(cap, base * 2.0 ** min(retries, 64))
    return step / 2, step


def backoff_seconds(retries: int, cap: float, base: float = BACKOFF_BASE_SECONDS) -> float:
    """Exponential backoff with equal jitter: uniform within `backoff_bounds`."""
    low, high = backoff_bounds(retries, cap, base)
    return random.uniform(low, high)


class DatabaseTask(Task):  # type: ignore[type-arg]
    """Validates arguments, applies the effect once per task id, retries transient faults only."""

    abstract = True
    # Celery's own retry-on-exception is off: transient faults are classified in `__call__`.
    autoretry_for = ()
    # In the main process: counts first deliveries whose process died (MAX_DELIVERIES).
    Request = "worker.deliveries:DatabaseRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        delivery = self.request.delivery_info
        task_id = self.request.id
        if task_id is None or not (delivery and delivery.get("redelivered")):
            return self._run_once(args, kwargs)
        retries = self.request.retries or 0
        earlier = deliveries.start_redelivered_run(task_id, retries)
        try:
            if self._delivery_cap_reached(args, kwargs, earlier):
                return None
            return self._run_once(args, kwargs)
        finally:
            deliveries.finish_redelivered_run(task_id, retries)

    def _run_once(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self.run(**self.validate(args, kwargs))
        except Retry:
            raise
        except Exception as error:
            if is_transient(error) and not self.request.called_directly:
                self._retry_later(error)
            self.dead_letter(args, kwargs, error)
            raise

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for `run`, checked against the task's contract.

        Runs before any database work; a task defined outside `worker.contracts` overrides it.
        """
        return validate_arguments(self.name, args, kwargs).model_dump()

    def _delivery_cap_reached(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], earlier: int
    ) -> bool:
        """Dead-letter a message whose `earlier` started runs all died (MAX_DELIVERIES)."""
        limit = get_settings().max_deliveries
        if earlier == 0:
            return False  # handed back unstarted, or its earlier run finished
        if earlier < limit:
            log.warning(
                "%s[%s] redelivered, an earlier delivery did not finish (delivery %d of %d)",
                self.name,
                self.request.id,
                earlier + 1,
                limit,
            )
            return False
        error = PoisonMessage(
            f"delivered {earlier} times without finishing: its worker process died "
            "(crash, OOM kill or hard time limit); not run again"
        )
        self.dead_letter(args, kwargs, error, attempts=earlier)
        return True

    def _retry_later(self, error: Exception) -> None:
        """Schedule another attempt with backoff; returns only when the retries are used up."""
        settings = get_settings()
        retries = self.request.retries or 0
        if retries >= settings.task_max_retries:
            log.error(
                "%s[%s] gave up after %d retries: %s",
                self.name,
                self.request.id,
                retries,
                type(error).__name__,
            )
            return
        delay = backoff_seconds(retries, settings.task_retry_backoff_max)
        log.warning(
            "%s[%s] transient database error (%s); retry %d in %.1fs",
            self.name,
            self.request.id,
            type(error).__name__,
            retries + 1,
            delay,
        )
        raise self.retry(exc=error, countdown=delay, max_retries=settings.task_max_retries)

    def apply_once(self, work: Callable[[Session], R]) -> R | None:
        """Run `work` in one session scope, recording this task id in the same transaction.

        A redelivered message whose id is already recorded does nothing and returns None.
        """
        task_id = self.request.id
        with session_scope() as session:
            if task_id is not None and not ledger.claim(session, task_id, self.name):
                log.info("%s[%s] was already applied; skipping duplicate", self.name, task_id)
                return None
            return work(session)

    def dead_letter(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException,
        attempts: int | None = None,
    ) -> None:
        """Record a task that failed for good in `task_failures`, so no failure is silent.

        `attempts` defaults to the runs so far: the first one plus every retry.
        """
        task_id = self.request.id or "unknown"
        if attempts is None:
            attempts = (self.request.retries or 0) + 1
        log.error("%s[%s] failed for good: %s: %s", self.name, task_id, type(error).__name__, error)
        try:
            with session_scope() as session:
                ledger.record_failure(
                    session,
                    task_id=task_id,
                    task_name=self.name,
                    args=args,
                    kwargs=kwargs,
                    error=error,
                    attempts=attempts,
                )
        except Exception:
            log.exception(
                "%s[%s] could not be dead-lettered; arguments were %r %r",
                self.name,
                task_id,
                args,
                kwargs,
            )
