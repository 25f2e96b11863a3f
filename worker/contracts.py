"""Task names and argument shapes, shared by the worker and by producers that enqueue tasks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

BIGINT_MAX: Final = 2**63 - 1
# A task id is kept in processed_tasks.task_id and task_failures.task_id, both String(255).
MAX_TASK_ID_LENGTH: Final = 255
# Error text kept with a dead letter, an outbox row or a refusal is cut to this many characters.
MAX_ERROR_LENGTH: Final = 2000

RECORD_VIEW: Final = "tasks.posts.record_view"
FLUSH_VIEW_COUNTS: Final = "tasks.posts.flush_view_counts"
DEACTIVATE_USER: Final = "tasks.users.deactivate_user"
DEACTIVATE_DORMANT_USERS: Final = "tasks.users.deactivate_dormant_users"
PRUNE_PROCESSED_TASKS: Final = "tasks.maintenance.prune_processed_tasks"
OUTBOX_RELAY: Final = "tasks.outbox.relay_outbox"
RECORD_REFUSAL: Final = "tasks.maintenance.record_refusal"
SAMPLE_METRICS: Final = "tasks.maintenance.sample_metrics"
SAMPLE_METRICS_INTERVAL: Final = 15.0  # seconds between two runs sent by beat

# A message header: when the message was published, in epoch seconds. The typed client (and so
# after_commit and the outbox relay) sets it; the worker measures the queue wait from it.
PUBLISHED_AT_HEADER: Final = "published_at"


def is_timestamp(value: object) -> TypeGuard[float]:
    """A usable `published_at`: a finite number (JSON gives int or float; bool is no number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# The tasks API services send, and so the only ones a dead letter may be requeued as. Every other
# name is internal (beat's housekeeping, the outbox relay, refusals, the "views.batch" pseudo task)
# or unknown: requeueing it could forge a dead letter or apply the worker's own bookkeeping twice.
PUBLIC_TASKS: Final = frozenset({RECORD_VIEW, DEACTIVATE_USER, DEACTIVATE_DORMANT_USERS})

RowId = Annotated[StrictInt, Field(ge=1, le=BIGINT_MAX)]


class InvalidTaskArguments(ValueError):
    """A task was called with arguments of the wrong shape; retrying can never help."""


class TaskArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RecordViewArgs(TaskArgs):
    post_id: RowId


class DeactivateUserArgs(TaskArgs):
    user_id: RowId


class DeactivateDormantUsersArgs(TaskArgs):
    inactive_days: Annotated[StrictInt, Field(ge=1, le=36_500)] = 365


class NoArgs(TaskArgs):
    pass


class RecordRefusalArgs(TaskArgs):
    """A message the worker's main process refused: dead-lettered by a pool child."""

    task_id: Annotated[str, Field(min_length=1, max_length=255)]
    task_name: Annotated[str, Field(min_length=1, max_length=200)]
    error_class: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(max_length=MAX_ERROR_LENGTH)]
    # What the refused message was called with, where its body could be read: kept so that
    # `failures retry` can send it again.
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # False: they were too large to keep (a dead letter that `failures retry` refuses to send).
    arguments_kept: bool = True


CONTRACTS: Final[dict[str, type[TaskArgs]]] = {
    RECORD_VIEW: RecordViewArgs,
    DEACTIVATE_USER: DeactivateUserArgs,
    DEACTIVATE_DORMANT_USERS: DeactivateDormantUsersArgs,
    FLUSH_VIEW_COUNTS: NoArgs,
    PRUNE_PROCESSED_TASKS: NoArgs,
    OUTBOX_RELAY: NoArgs,
    RECORD_REFUSAL: RecordRefusalArgs,
    SAMPLE_METRICS: NoArgs,
}


def _describe(task_name: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        value = item.get("input")
        shown = f"{value!r} ({type(value).__name__})" if item["type"] != "missing" else "nothing"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        problems.append(f"{field}: {item['msg']}, got {shown}")
    return f"{task_name}: invalid arguments: " + "; ".join(problems)


def validate_arguments(
    task_name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> TaskArgs:
    """Bind positional and keyword arguments to the task's contract, or raise a clear error."""
    try:
        contract = CONTRACTS[task_name]
    except KeyError:
        raise InvalidTaskArguments(f"unknown task name {task_name!r}") from None
    fields = list(contract.model_fields)
    if not isinstance(args, list | tuple):
        raise InvalidTaskArguments(f"{task_name}: positional arguments must be a list")
    if len(args) > len(fields):
        raise InvalidTaskArguments(
            f"{task_name}: takes at most {len(fields)} positional argument(s), got {len(args)}"
        )
    bound: dict[str, Any] = dict(zip(fields, args, strict=False))
    for key, value in (kwargs or {}).items():
        if key in bound:
            raise InvalidTaskArguments(f"{task_name}: got multiple values for {key!r}")
        bound[key] = value
    try:
        return contract.model_validate(bound)
    except ValidationError as error:
        raise InvalidTaskArguments(_describe(task_name, error)) from None
