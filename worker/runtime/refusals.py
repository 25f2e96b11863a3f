"""Messages the worker refuses to run: each one is dead-lettered, or quarantined when it has no id.

Runs in the worker's main process, which never opens a database connection: a dead letter is
written by a pool child, through a small `record_refusal` task (JSON, never the refused bytes)
published to the worker's own queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from worker.config import Settings
from worker.contracts import MAX_ERROR_LENGTH, RECORD_REFUSAL
from worker.runtime import envelope, instrumentation, quarantine
from worker.runtime.envelope import Refused

log = logging.getLogger(__name__)


# publish(kwargs, task_id): sends a record_refusal task to the worker's own queue, or raises.
Publisher = Callable[[dict[str, Any], str], None]


@dataclass(frozen=True)
class Refuser:
    """Keeps every refused message: a dead letter when it has an id, else the quarantine."""

    queue: str
    max_bytes: int
    quarantine_max_entries: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Refuser:
        return cls(settings.task_queue, settings.max_message_bytes, settings.quarantine_max_entries)

    def refuse_celery_message(self, app: Any, message: Any, error: BaseException | None) -> None:
        """Keep a message Celery itself refused or could not handle (already out of the queue)."""
        refused, raw = from_celery_message(message, error)
        with message.channel.conn_or_acquire() as client:
            self.refuse(refused, raw, client, app_publisher(app, self.queue))

    def refuse(self, refused: Refused, raw: bytes, redis: Redis, publish: Publisher) -> None:
        """Dead-letter or quarantine `refused`, with one WARNING line naming the reason.

        Never raises: a message that cannot be kept anywhere is logged at ERROR with its digest.
        """
        instrumentation.refused(refused.task_name)
        where = "quarantined"
        try:
            if refused.task_id is not None and refused.task_name != RECORD_REFUSAL:
                kwargs, note = self.refusal_kwargs(refused)
                publish(kwargs, f"refusal:{refused.task_id}"[: envelope.MAX_ID_LENGTH])
                where = "dead-lettered" + note
            else:
                quarantine.add(
                    redis,
                    self.queue,
                    raw=raw,
                    digest=refused.digest,
                    reason=refused.reason,
                    error_class=refused.error_class,
                    max_entries=self.quarantine_max_entries,
                    max_bytes=self.max_bytes,
                )
        except Exception as error:
            log.error(
                "refused message %s[%s] (%s, %d bytes) could not be kept (%s: %s): %s: %s",
                refused.task_name,
                refused.task_id,
                refused.digest,
                refused.size,
                type(error).__name__,
                error,
                refused.error_class,
                refused.reason,
            )
            return
        log.warning(
            "refused message %s[%s] (%s, %d bytes), %s: %s: %s",
            refused.task_name,
            refused.task_id or "no id",
            refused.digest,
            refused.size,
            where,
            refused.error_class,
            refused.reason,
        )

    def refusal_kwargs(self, refused: Refused) -> tuple[dict[str, Any], str]:
        """The record_refusal arguments; the refused arguments only while they stay small."""
        kept: dict[str, Any] = {"args": refused.args, "kwargs": refused.kwargs}
        note = ""
        if len(json.dumps(kept)) > self.max_bytes // 2:
            # Never [] and {}: a task with defaults would then be retried as if called bare.
            kept = {"args": [], "kwargs": {}, "arguments_kept": False}
            note = " without its arguments (too large to keep)"
        reason = f"{refused.reason} ({refused.digest}, {refused.size} bytes)"
        kwargs = {
            "task_id": refused.task_id,
            "task_name": refused.task_name,
            "error_class": refused.error_class[:200],
            "reason": reason[:MAX_ERROR_LENGTH],
            **kept,
        }
        return kwargs, note


def from_celery_message(message: Any, error: BaseException | None) -> tuple[Refused, bytes]:
    """What is known of a message Celery itself refused (unknown task, invalid after our checks).

    Its body is decoded only as far as the envelope checks already allowed.
    """
    headers = message.headers if isinstance(getattr(message, "headers", None), dict) else {}
    body = message.body if isinstance(message.body, bytes) else str(message.body or "").encode()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    try:
        decoded = json.loads(body)
        args, kwargs = envelope.arguments(decoded)
    except (ValueError, RecursionError):
        pass
    name = headers.get("task")
    refused = Refused(
        error_class=type(error).__name__ if error is not None else "UnknownMessage",
        reason=str(error) if error is not None else "not a task message",
        digest=envelope.digest(body),
        size=len(body),
        task_id=envelope.salvage_id(headers.get("id"), body),
        task_name=envelope.sanitise(name, envelope.MAX_NAME_LENGTH)
        if isinstance(name, str) and name
        else "unknown",
        args=args,
        kwargs=kwargs,
    )
    return refused, body


def app_publisher(app: Any, queue: str) -> Publisher:
    """Publish record_refusal tasks through `app`'s producer pool to `queue`."""

    def publish(kwargs: dict[str, Any], task_id: str) -> None:
        app.send_task(RECORD_REFUSAL, kwargs=kwargs, task_id=task_id, queue=queue)

    return publish
