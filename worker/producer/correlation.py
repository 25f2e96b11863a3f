"""Correlation ids: the API request that caused a task, carried in its `correlation_id` header.

An API sets one per request (`with correlation_id(request_id): ...`); every task enqueued in that
context, through the typed client, after commit or the outbox, carries it, and the worker puts
it on each log line of the task and on its dead letter. A raw producer sets the header itself:
`send_task(name, ..., headers={"correlation_id": request_id})`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

CORRELATION_HEADER: Final = "correlation_id"
MAX_CORRELATION_ID_LENGTH: Final = 200

_current: ContextVar[str | None] = ContextVar("worker_correlation_id", default=None)


def valid_correlation_id(value: object) -> bool:
    """True for 1-200 printable ASCII characters without spaces (a UUID, `req-42`, ...)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_CORRELATION_ID_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def current_correlation_id() -> str | None:
    """The correlation id of the current context, if one is set."""
    return _current.get()


@contextmanager
def correlation_id(value: str | None) -> Iterator[str | None]:
    """Tasks enqueued inside the block carry `value` as their correlation id (None: none).

    A context variable: each thread and each asyncio task sees its own, and the previous value
    is restored on exit. Raises ValueError for a value `valid_correlation_id` refuses.
    """
    if value is not None and not valid_correlation_id(value):
        raise ValueError(
            f"a correlation id must be 1-{MAX_CORRELATION_ID_LENGTH} printable ASCII characters "
            f"without spaces, got {str(value)[:40]!r}"
        )
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)
