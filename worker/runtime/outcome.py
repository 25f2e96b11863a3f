"""How a run ended, told by the pool child to the worker's main process inside the run's result.

In prefork the main process receives only `(failed, repr of the return value, runtime)` of a
run. A run that skipped a duplicate, or dead-lettered a poison message, returns normally as far
as Celery knows: the child appends its outcome to the repr (`Reported`) and the main process
splits it off again (`split`) before Celery uses the value. No extra round trip, no shared
files: the count is made where the result arrives, in the process a dying child cannot take
with it.
"""

from __future__ import annotations

from contextvars import ContextVar
from enum import StrEnum
from typing import Any, Final

from celery.utils.saferepr import saferepr


class Outcome(StrEnum):
    """The `outcome` label of `worker_tasks_total`."""

    SUCCEEDED = "succeeded"
    DUPLICATE = "duplicate"  # skipped: the ledger has its task id
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    REFUSED = "refused"  # never run: malformed, oversized or unknown
    POISON = "poison"  # dead-lettered unrun: its earlier runs died with their process
    LOST = "lost"  # the run died with its process (SIGKILL, OOM, hard time limit): redelivered


# What a run that returns can report; the suffix is unambiguous (see `reported`).
_SUFFIXES: Final = {f" ({each})": each for each in (Outcome.DUPLICATE, Outcome.POISON)}
_SUFFIXES[f" ({Outcome.SUCCEEDED})"] = Outcome.SUCCEEDED
_ENDINGS: Final = tuple(_SUFFIXES)
# Room kept in Celery's result repr (resultrepr_maxsize) for the suffix.
_SUFFIX_ROOM: Final = 24
# Values whose repr can never end in a suffix: returned as they are, at no cost.
_PLAIN_TYPES: Final = (int, float, bool, type(None))

_noted: ContextVar[Outcome | None] = ContextVar("worker_run_outcome", default=None)


def note(outcome: Outcome) -> None:
    """Say that the current run, when it returns, ended as `outcome` (a duplicate, poison)."""
    _noted.set(outcome)


def begin() -> None:
    """Forget what an earlier run on this thread noted."""
    _noted.set(None)


def noted() -> Outcome | None:
    """What the current run noted, if anything."""
    return _noted.get()


class Reported:
    """A run's return value with its outcome: its repr is the value's, then ` (outcome)`."""

    __slots__ = ("maxsize", "outcome", "value")

    def __init__(self, value: Any, outcome: Outcome, maxsize: int) -> None:
        self.value = value
        self.outcome = outcome
        self.maxsize = maxsize

    def __repr__(self) -> str:
        # Cut short here, so Celery's own cut (at maxsize) never reaches the suffix.
        inner = saferepr(self.value, max(self.maxsize - _SUFFIX_ROOM, 16))
        return f"{inner} ({self.outcome})"


def reported(value: Any, outcome: Outcome | None, maxsize: int) -> Any:
    """What a run returns to Celery: `value`, or a `Reported` carrying `outcome`.

    A plain success is returned as is, unless its repr happens to end like a suffix: then it
    is reported as succeeded explicitly, so `split` never mistakes a value for an outcome.
    """
    if outcome is None:
        if type(value) in _PLAIN_TYPES or not saferepr(value, maxsize).endswith(_ENDINGS):
            return value
        outcome = Outcome.SUCCEEDED
    return Reported(value, outcome, maxsize)


def split(text: Any) -> tuple[Outcome, Any]:
    """The outcome a child appended to a result's repr, and the repr without it."""
    if isinstance(text, str) and text.endswith(")"):
        at = text.rfind(" (")
        if at >= 0:
            outcome = _SUFFIXES.get(text[at:])
            if outcome is not None:
                return outcome, text[:at]
    return Outcome.SUCCEEDED, text
