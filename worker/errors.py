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
