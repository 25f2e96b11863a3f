"""The typed enqueue client for API services (`tasks`, `views`, `correlation_id`).

It lives in `worker.producer`.
"""

from worker.producer.client import (
    InvalidTaskOptions,
    PublishError,
    SendOptions,
    TaskCalls,
    TaskClient,
    TaskMessage,
    ViewCounter,
    build_message,
    tasks,
    views,
)
from worker.producer.correlation import (
    correlation_id,
    current_correlation_id,
    valid_correlation_id,
)

__all__ = [
    "InvalidTaskOptions",
    "PublishError",
    "SendOptions",
    "TaskCalls",
    "TaskClient",
    "TaskMessage",
    "ViewCounter",
    "build_message",
    "correlation_id",
    "current_correlation_id",
    "tasks",
    "valid_correlation_id",
    "views",
]
