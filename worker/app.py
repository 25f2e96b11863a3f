"""`celery -A worker.app`: the worker's Celery app (built in `worker.runtime.app`)."""

from worker.runtime.app import app

__all__ = ["app"]
