"""Messages the worker refuses to run (too large, not JSON, unknown task), each dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy

from worker.config import get_settings
from worker.contracts import RECORD_REFUSAL

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 200
MAX_REASON_LENGTH = 2000


class MessageTooLarge(InvalidTaskError):
    """A message body above MAX_MESSAGE_BYTES: refused before it is decoded."""


def size_limited_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default execution strategy behind a check of the raw body's size.

    Set as `Task.Strategy`. It runs in the worker's main process before the body is decoded;
    raising `InvalidTaskError` makes Celery reject the message and send `task_rejected`.
    """
    handle = default_strategy(task, app, consumer, **options)
    limit = get_settings().max_message_bytes

    def on_message(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        size = len(message.body or b"")
        if size > limit:
            raise MessageTooLarge(
                f"{task.name}: message body of {size} bytes exceeds MAX_MESSAGE_BYTES={limit}; "
                "refused without decoding it"
            )
        return handle(message, body, *args, **kwargs)

    return on_message


def describe_refusal(message: Any, error: BaseException | None) -> str:
    """Why a message was refused, with what is known about it without decoding its body."""
    body = message.body or b""
    reason = f"{type(error).__name__}: {error}" if error is not None else "not a task message"
    return f"{reason} (content type {message.content_type!r}, {len(body)} bytes, not decoded)"


def record_refusal(app: Any, message: Any, error: BaseException | None) -> None:
    """Have a pool child dead-letter a message Celery refused, by the id and name in its headers.

    Runs in the worker's main process, which must never open a database connection: it
    publishes a small `record_refusal` task (JSON, never the refused body) to its own queue.
    """
    headers = message.headers or {}
    task_id, name = headers.get("id"), headers.get("task")
    description = describe_refusal(message, error)
    if not isinstance(task_id, str) or not task_id:
        log.error("refused a message without a task id: %s", description)
        return
    name = name if isinstance(name, str) and name else "unknown"
    task_id = task_id[:MAX_ID_LENGTH]
    try:
        app.send_task(
            RECORD_REFUSAL,
            kwargs={
                "task_id": task_id,
                "task_name": name[:MAX_NAME_LENGTH],
                "error_class": type(error).__name__ if error is not None else "UnknownMessage",
                "reason": description[:MAX_REASON_LENGTH],
            },
            task_id=f"refusal:{task_id}"[:MAX_ID_LENGTH],
            queue=get_settings().task_queue,
        )
        log.error("%s[%s] refused: %s", name, task_id, description)
    except Exception:
        log.exception(
            "%s[%s] refused but could not be dead-lettered: %s", name, task_id, description
        )
