"""Base class of every database task: one method that wires the runtime's concerns together.

Arguments are checked against the task's contract (`worker.contracts`), the poison cap
(`poison`), exactly-once effects (`exactly_once`), the retry policy (`retries`), dead letters
(`dead_letters`) and the outcome reported to the main process (`outcome`) each live in their
own module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Retry
from sqlalchemy.orm import Session

from worker.config import get_settings
from worker.contracts import validate_arguments
from worker.runtime import dead_letters, exactly_once, instrumentation, outcome
from worker.runtime.log_context import TaskRequest, correlation_of
from worker.runtime.poison import delivery_counter
from worker.runtime.request import DatabaseRequest
from worker.runtime.retries import RetryPolicy, is_transient

log = logging.getLogger(__name__)

R = TypeVar("R")


@cache
def retry_policy() -> RetryPolicy:
    """This process's retry policy, from the settings."""
    return RetryPolicy.from_settings(get_settings())


class WorkerRequest(TaskRequest, DatabaseRequest):
    """The request of a database task in the main process: its lines carry the task's ids, and
    first-delivery runs that died are counted (MAX_DELIVERIES)."""


class DatabaseTask(Task):  # type: ignore[type-arg]
    """Validates arguments, applies the effect once per task id, retries transient faults only."""

    abstract = True
    # Celery's own retry-on-exception is off: transient faults are classified in `__call__`.
    autoretry_for = ()
    # In the main process: binds the task to its lines, counts first deliveries that died.
    Request = "worker.runtime.task:WorkerRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._reports_outcome():
            return self._deliver(args, kwargs)
        outcome.begin()
        value = self._deliver(args, kwargs)
        return outcome.reported(value, outcome.noted(), self.resultrepr_maxsize)

    def _reports_outcome(self) -> bool:
        """True in a worker's run whose return value goes nowhere but the main process's log
        and metrics: there it carries the outcome (`worker.runtime.outcome`). A caller that
        receives the value (eager mode, a direct call, a callback or a stored result) gets it
        unchanged."""
        request = self.request
        return bool(
            instrumentation.enabled()
            and not request.is_eager
            and not request.called_directly
            and not request.callbacks
            and not request.chain
            and self._result_ignored(request)
        )

    def _result_ignored(self, request: Any) -> bool:
        # As Celery decides (the message's ignore_result, else the task's): a stored result
        # must stay the value the task returned.
        explicit = vars(request).get("ignore_result")
        return bool(self.ignore_result if explicit is None else explicit)

    def _deliver(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        delivery = self.request.delivery_info
        task_id = self.request.id
        if task_id is None or not (delivery and delivery.get("redelivered")):
            return self._run(args, kwargs)
        counter, retries = delivery_counter(), self.request.retries or 0
        earlier = counter.start_redelivered_run(task_id, retries)
        try:
            poison = counter.poison(earlier)
            if poison is not None:
                self.dead_letter(args, kwargs, poison, attempts=earlier)
                outcome.note(outcome.Outcome.POISON)
                return None
            if earlier:
                log.warning(
                    "%s[%s] redelivered, an earlier delivery did not finish (delivery %d of %d)",
                    self.name,
                    task_id,
                    earlier + 1,
                    counter.limit,
                )
            return self._run(args, kwargs)
        finally:
            counter.finish_redelivered_run(task_id, retries)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self.run(**self.validate(args, kwargs))
        except Retry:
            raise
        except Exception as error:
            reason = None
            if not self.request.called_directly:
                reason = self._retry_if_transient(error)
            self.dead_letter(args, kwargs, error, reason=reason)
            raise

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for `run`, checked against the task's contract.

        Runs before any database work; a task defined outside `worker.contracts` overrides it.
        """
        return validate_arguments(self.name, args, kwargs).model_dump()

    def _retry_if_transient(self, error: Exception) -> str | None:
        """Schedule another attempt with backoff; returns if the error is permanent (None) or
        the retries are used up (saying so, for the dead letter's log line)."""
        if not is_transient(error):
            return None
        policy, retries = retry_policy(), self.request.retries or 0
        delay = policy.delay(retries)
        if delay is None:
            return f"gave up after {retries} retries"
        log.warning(
            "%s[%s] transient database error (%s); retry %d in %.1fs",
            self.name,
            self.request.id,
            type(error).__name__,
            retries + 1,
            delay,
        )
        raise self.retry(exc=error, countdown=delay, max_retries=policy.max_retries)

    def apply_once(self, work: Callable[[Session], R]) -> R | None:
        """Run `work` in one session scope, recording this task id in the same transaction."""
        return exactly_once.apply_once(self.request.id, self.name, work)

    def dead_letter(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException,
        attempts: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Record a task that failed for good in `task_failures`, so no failure is silent.

        `attempts` defaults to the runs so far: the first one plus every retry. `reason`, if
        given, goes into the one log line of the failure.
        """
        if attempts is None:
            attempts = (self.request.retries or 0) + 1
        task_id = self.request.id or "unknown"
        dead_letters.record(
            self.name,
            task_id,
            args,
            kwargs,
            error,
            attempts,
            reason=reason,
            correlation_id=correlation_of(self.request.headers),
        )
