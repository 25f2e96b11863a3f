"""`DatabaseTask` for task modules written against this path; it lives in `worker.runtime.task`."""

from worker.runtime.task import DatabaseTask

__all__ = ["DatabaseTask"]
