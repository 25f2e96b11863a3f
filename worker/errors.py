"""Domain errors that say a task can never succeed, so retrying it would be pointless."""

from __future__ import annotations


class PermanentError(Exception):
    """Raised when the input itself is wrong: the task fails for good and is dead-lettered."""


class NotFound(PermanentError, LookupError):
    """The row a task refers to does not exist."""

    def __init__(self, kind: str, row_id: int) -> None:
        super().__init__(f"{kind} {row_id} does not exist")
        self.kind = kind
        self.row_id = row_id

    def __reduce__(self) -> tuple[type[NotFound], tuple[str, int]]:
        # Celery pickles a failure for its events and log line; an exception that does not
        # survive the round trip is reported under the nearest base class that does.
        return (type(self), (self.kind, self.row_id))
