"""The typed enqueue client for API services (`tasks`, `views`); it lives in `worker.producer`."""

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

__all__ = [
    "InvalidTaskOptions",
    "PublishError",
    "SendOptions",
    "TaskCalls",
    "TaskClient",
    "TaskMessage",
    "ViewCounter",
    "build_message",
    "tasks",
    "views",
]
