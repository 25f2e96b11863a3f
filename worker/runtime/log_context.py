"""The task a log line is about, bound wherever the worker handles one.

In a pool child, for the run of a task (`enter_task` at task_prerun, `leave_task` at
task_postrun); in the main process, while it hands a message to Celery (`handling`) and while
Celery's request reacts to the run (`TaskRequest`: accepted, succeeded, retried, failed, worker
lost, time limit). The JSON formatter (`json_logs`) reads the fields; so does a dead letter, for
its correlation id. Each binding is a fresh set of fields that ends with its block, so nothing
of one task is left on the lines of the next.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, Final

from celery import Task
from celery.worker.request import Request

from worker.producer.correlation import CORRELATION_HEADER, correlation_id, valid_correlation_id
from worker.runtime.envelope.identity import MAX_NAME_LENGTH, sanitise, usable_id

# The fields of a line about a task, all present (None when unknown) on such a line.
TASK_FIELDS: Final = ("task_id", "task_name", "queue", "retries", "correlation_id")

_fields: ContextVar[Mapping[str, object] | None] = ContextVar("worker_log_task", default=None)


class _Runs(threading.local):
    """The runs entered in this thread and not yet left (nested when tasks run eagerly)."""

    def __init__(self) -> None:
        self.stack: list[ExitStack] = []


_runs = _Runs()


def current() -> Mapping[str, object]:
    """The task fields bound here, or an empty mapping outside a task."""
    return _fields.get() or {}


@contextmanager
def bound(fields: Mapping[str, object]) -> Iterator[None]:
    """Lines logged in the block carry `fields`, and only those, instead of what was bound."""
    token = _fields.set(dict(fields))
    try:
        yield
    finally:
        _fields.reset(token)


def correlation_of(headers: object) -> str | None:
    """The correlation id in message headers, if it is one (anything else is ignored)."""
    value = headers.get(CORRELATION_HEADER) if isinstance(headers, Mapping) else None
    return value if valid_correlation_id(value) else None


def task_fields(
    task_id: object, task_name: object, queue: object, retries: object, correlation: str | None
) -> dict[str, object]:
    """The task fields, each as the ledger would keep it, or None (raw producers send anything)."""
    return {
        "task_id": task_id if usable_id(task_id) else None,
        "task_name": sanitise(task_name, MAX_NAME_LENGTH) if task_name is not None else None,
        "queue": queue if isinstance(queue, str) else None,
        "retries": retries if isinstance(retries, int) and not isinstance(retries, bool) else 0,
        "correlation_id": correlation,
    }


def _queue(delivery_info: object) -> object:
    return delivery_info.get("routing_key") if isinstance(delivery_info, Mapping) else None


def enter_task(task: Task) -> None:  # type: ignore[type-arg]
    """Bind the running task's fields (task_prerun, in the process that runs it).

    Its correlation id also becomes the producer's (`worker.client.correlation_id`), so tasks
    it enqueues carry it on.
    """
    request = task.request
    correlation = correlation_of(request.headers)
    fields = task_fields(
        request.id, task.name, _queue(request.delivery_info), request.retries, correlation
    )
    run = ExitStack()
    run.enter_context(bound(fields))
    run.enter_context(correlation_id(correlation))
    _runs.stack.append(run)


def leave_task() -> None:
    """Unbind what the last `enter_task` of this thread bound (task_postrun)."""
    if _runs.stack:
        _runs.stack.pop().close()


@contextmanager
def handling(message: Any) -> Iterator[None]:
    """Bind the task of a raw message while the main process hands it to Celery."""
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, Mapping) else {}
    fields = task_fields(
        headers.get("id"),
        headers.get("task"),
        _queue(getattr(message, "delivery_info", None)),
        headers.get("retries"),
        correlation_of(headers),
    )
    with bound(fields):
        yield


class TaskRequest(Request):
    """Celery's request in the main process, with its task bound to every line it logs.

    Celery's request keeps the name `correlation_id` for a message property (the task id, for
    RPC replies), which hides a header of that name; the header is copied into the request's
    `headers`, where the child finds it and from which a retry publishes it again.
    """

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        request = self.request_dict
        correlation = correlation_of(getattr(message, "headers", None))
        if correlation is not None:
            headers = request.get("headers")
            extra = headers if isinstance(headers, dict) else {}
            request["headers"] = {**extra, CORRELATION_HEADER: correlation}
        self._log_fields = task_fields(
            self.id,
            self.name,
            _queue(self.delivery_info),
            request.get("retries"),
            correlation,
        )

    def on_accepted(self, *args: Any, **kwargs: Any) -> Any:
        with bound(self._log_fields):
            return super().on_accepted(*args, **kwargs)

    def on_timeout(self, *args: Any, **kwargs: Any) -> Any:
        with bound(self._log_fields):
            return super().on_timeout(*args, **kwargs)

    def on_success(self, *args: Any, **kwargs: Any) -> Any:
        with bound(self._log_fields):
            return super().on_success(*args, **kwargs)

    def on_retry(self, *args: Any, **kwargs: Any) -> Any:
        with bound(self._log_fields):
            return super().on_retry(*args, **kwargs)

    def on_failure(self, *args: Any, **kwargs: Any) -> Any:
        with bound(self._log_fields):
            return super().on_failure(*args, **kwargs)
