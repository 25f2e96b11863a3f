"""The worker's Celery request: hooks that run in the main process as each run ends.

Set as `DatabaseTask.Request`. Celery calls them in the worker's main process, as results
arrive from pool children, so what they record survives the death of any child: first
deliveries whose process died, for the poison cap (`poison`), and each run's outcome, duration
and queue wait, for the metrics (`instrumentation`).
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request

from worker.runtime import instrumentation
from worker.runtime.outcome import Outcome
from worker.runtime.poison import delivery_counter


class DatabaseRequest(Request):
    """Celery's request, counting lost first deliveries and every run's outcome."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Celery's strategy subclasses the task's Request once per task (create_request_cls)
        # and defines on_success there, which hides any defined here: it is wrapped instead.
        generated = cls.__dict__.get("on_success")
        if generated is not None and instrumentation.enabled():
            cls.on_success = instrumentation.counting_success(generated)  # type: ignore[method-assign]

    def on_accepted(self, pid: Any, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        if instrumentation.enabled():
            instrumentation.started(self)

    def on_retry(self, exc_info: Any) -> None:
        if instrumentation.enabled():
            instrumentation.finished(self, Outcome.RETRIED)
        super().on_retry(exc_info)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        error = exc_info.exception
        error = error.exc if isinstance(error, ExceptionWithTraceback) else error
        lost = isinstance(error, WorkerLostError | TimeLimitExceeded) or (
            isinstance(error, SystemExit | KeyboardInterrupt)
            and not (
                getattr(self, "_already_cancelled", False)
                or getattr(self, "_already_revoked", False)
            )
        )
        # A redelivered run counts itself when it starts (in the child): only a first delivery
        # is counted here.
        if lost and self.id and not (self.delivery_info or {}).get("redelivered"):
            delivery_counter().record_lost_run(self.id, self.request_dict.get("retries") or 0)
        if instrumentation.enabled():
            instrumentation.failed(self, error, lost)
        return super().on_failure(exc_info, send_failed_event, return_ok)
