"""Typed producer client for API services: one checked call per task, sent by name as JSON."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypedDict, Unpack
from urllib.parse import unquote, urlsplit

from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError

from worker.config import get_settings
from worker.contracts import (
    DEACTIVATE_DORMANT_USERS,
    DEACTIVATE_USER,
    MAX_TASK_ID_LENGTH,
    PUBLISHED_AT_HEADER,
    RECORD_VIEW,
    InvalidTaskArguments,
    validate_arguments,
)
from worker.producer import viewbuffer
from worker.producer.correlation import CORRELATION_HEADER, current_correlation_id

if TYPE_CHECKING:
    from celery import Celery

_QUEUE_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
)


class InvalidTaskOptions(InvalidTaskArguments):
    """A delivery option (countdown, eta, queue, task_id) is malformed."""


class PublishError(RuntimeError):
    """The broker could not take the message (Redis down or unreachable)."""


class SendOptions(TypedDict, total=False):
    """Delivery options every typed call accepts as keyword arguments."""

    countdown: float
    eta: datetime
    queue: str
    task_id: str


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A checked task call, ready to publish: name, JSON arguments and delivery options."""

    task_name: str
    task_id: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    countdown: float | None = None
    eta: datetime | None = None
    queue: str | None = None
    # The request that caused the task (`worker.client.correlation_id`), sent as a header.
    correlation_id: str | None = None

    def headers(self) -> dict[str, str]:
        """The message headers this call adds to Celery's own."""
        if self.correlation_id is None:
            return {}
        return {CORRELATION_HEADER: self.correlation_id}


_OPTION_NAMES: Final = frozenset(SendOptions.__annotations__)


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = options.keys() - _OPTION_NAMES
    if unknown:
        raise InvalidTaskOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
    # A held message must run before Redis hands it out again (see Settings.max_task_delay_seconds).
    limit = get_settings().max_task_delay_seconds
    countdown, eta = options.get("countdown"), options.get("eta")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float):
            raise InvalidTaskOptions(f"countdown must be a number of seconds, got {countdown!r}")
        if not math.isfinite(countdown) or not 0 <= countdown <= limit:
            # Redis redelivers a message still unacknowledged after the visibility timeout.
            raise InvalidTaskOptions(
                f"countdown must be between 0 and {limit} seconds "
                f"(BROKER_VISIBILITY_TIMEOUT - TASK_TIME_LIMIT), got {countdown!r}"
            )
        if eta is not None:
            raise InvalidTaskOptions("give countdown or eta, not both")
    if eta is not None:
        if not isinstance(eta, datetime) or eta.tzinfo is None or eta.utcoffset() is None:
            raise InvalidTaskOptions(f"eta must be a timezone-aware datetime, got {eta!r}")
        if eta - datetime.now(UTC) > timedelta(seconds=limit):
            raise InvalidTaskOptions(
                f"eta must be at most {limit} seconds ahead "
                "(BROKER_VISIBILITY_TIMEOUT - TASK_TIME_LIMIT)"
            )
    queue = options.get("queue")
    if queue is not None and not (
        isinstance(queue, str) and 0 < len(queue) <= 100 and set(queue) <= _QUEUE_CHARS
    ):
        raise InvalidTaskOptions(
            f"queue must be 1-100 characters of A-Z a-z 0-9 _ . : -, got {queue!r}"
        )
    task_id = options.get("task_id")
    if task_id is not None and not (
        isinstance(task_id, str)
        and 0 < len(task_id) <= MAX_TASK_ID_LENGTH
        and task_id.isascii()
        and task_id.isprintable()
        and " " not in task_id
    ):
        raise InvalidTaskOptions(
            f"task_id must be 1-{MAX_TASK_ID_LENGTH} printable ASCII characters without "
            f"spaces, got {task_id!r}"
        )


def build_message(
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Unpack[SendOptions],
) -> TaskMessage:
    """Check a call against the task's contract and the options; raise a clear error if wrong.

    The arguments are sent as keyword arguments named as in the contract; a task id is chosen
    here when the caller gave none, so it is known before the message leaves. The correlation
    id is the one of the calling context, taken now (not when an after-commit call publishes).
    """
    contract = validate_arguments(task_name, args, kwargs)
    _check_options(options)
    return TaskMessage(
        task_name=task_name,
        task_id=options.get("task_id") or str(uuid.uuid4()),
        kwargs=contract.model_dump(),
        countdown=options.get("countdown"),
        eta=options.get("eta"),
        queue=options.get("queue"),
        correlation_id=current_correlation_id(),
    )


class TaskCalls:
    """One typed method per task; subclasses decide how a checked call is delivered."""

    def submit(self, message: TaskMessage) -> str:
        """Deliver a checked message; return its task id."""
        raise NotImplementedError

    def record_view(self, post_id: int, **options: Unpack[SendOptions]) -> str:
        """Count one view of a post (`tasks.posts.record_view`); returns the task id."""
        return self.submit(build_message(RECORD_VIEW, kwargs={"post_id": post_id}, **options))

    def deactivate_user(self, user_id: int, **options: Unpack[SendOptions]) -> str:
        """Deactivate one user (`tasks.users.deactivate_user`); returns the task id."""
        return self.submit(build_message(DEACTIVATE_USER, kwargs={"user_id": user_id}, **options))

    def deactivate_dormant_users(
        self, inactive_days: int = 365, **options: Unpack[SendOptions]
    ) -> str:
        """Deactivate every user inactive for `inactive_days`; returns the task id."""
        return self.submit(
            build_message(
                DEACTIVATE_DORMANT_USERS, kwargs={"inactive_days": inactive_days}, **options
            )
        )


def _default_app() -> Celery:
    # The shared app: same broker, queue and serializer settings as the worker, and the one the
    # pytest plugin's `eager_tasks` switches to eager mode. Importing it imports no task module.
    from worker.celery_app import app

    return app


class TaskClient(TaskCalls):
    """Publishes tasks now: by name to the broker, or inline when the app runs tasks eagerly."""

    def __init__(self, app: Celery | None = None) -> None:
        self._app = app

    @property
    def app(self) -> Celery:
        """The Celery app used to publish (the worker's app unless one was given)."""
        if self._app is None:
            self._app = _default_app()
        return self._app

    def send(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> str:
        """Check and publish a task by name (for names without a typed method)."""
        return self.submit(build_message(task_name, args, kwargs, **options))

    def submit(self, message: TaskMessage) -> str:
        return self.publish(message)

    def publish(
        self, message: TaskMessage, *, retry_policy: Mapping[str, Any] | None = None
    ) -> str:
        """Publish a message as is; raise `PublishError` if the broker cannot take it."""
        app = self.app
        if app.conf.task_always_eager:
            return self._apply_inline(app, message)
        extra: dict[str, Any] = {} if retry_policy is None else {"retry_policy": retry_policy}
        try:
            app.send_task(
                message.task_name,
                args=list(message.args),
                kwargs=dict(message.kwargs),
                task_id=message.task_id,
                countdown=message.countdown,
                eta=message.eta,
                queue=message.queue,
                # When it left, for the worker's queue-wait metric (epoch seconds).
                headers={**message.headers(), PUBLISHED_AT_HEADER: time.time()},
                **extra,
            )
        except (OperationalError, RedisError, OSError) as error:
            raise PublishError(self._describe(message, error)) from None
        return message.task_id

    def _apply_inline(self, app: Celery, message: TaskMessage) -> str:
        # send_task ignores task_always_eager, so tests would see no effect: run the
        # registered task in this process instead, exactly as `.delay()` does in eager mode.
        app.loader.import_default_modules()
        task = app.tasks[message.task_name]
        task.apply_async(
            args=message.args,
            kwargs=dict(message.kwargs),
            task_id=message.task_id,
            headers=message.headers(),
        )
        return message.task_id

    def _describe(self, message: TaskMessage, error: BaseException) -> str:
        text = f"{message.task_name}[{message.task_id}] could not be published: {error}"
        for secret in _broker_secrets(self.app):
            text = text.replace(secret, "***")
        return text


def _broker_secrets(app: Celery) -> set[str]:
    """The broker password as written in the URL and decoded, to keep it out of messages."""
    try:
        password = urlsplit(str(app.conf.broker_url or "")).password
    except ValueError:  # a malformed URL: nothing we can find to hide
        return set()
    return {password, unquote(password)} - {""} if password else set()


tasks: Final = TaskClient()
"""The process-wide client on the worker's app: `tasks.record_view(post.id)`."""


class ViewCounter:
    """Buffered view counting: one Redis round trip per call, no Celery message per view.

    `tasks.posts.flush_view_counts` (beat, every VIEW_FLUSH_INTERVAL seconds) applies the buffer
    to `posts.view_count` exactly once. Use `tasks.record_view` for one task per view instead.
    """

    def __init__(self, redis: Redis | None = None, queue: str | None = None) -> None:
        self._redis = redis
        self._queue = queue

    @property
    def redis(self) -> Redis:
        return self._redis if self._redis is not None else viewbuffer.get_redis()

    def record_view(self, post_id: int) -> None:
        """Count one view of `post_id`; a bad id raises `InvalidTaskArguments`."""
        viewbuffer.record_view(self.redis, post_id, queue=self._queue)

    def record_views(self, counts: Mapping[int, int]) -> None:
        """Count `{post_id: views}` in one round trip; every id and count is checked first."""
        viewbuffer.record_views(self.redis, counts, queue=self._queue)


views: Final = ViewCounter()
"""The process-wide buffered view counter on REDIS_URL: `views.record_view(post.id)`."""
