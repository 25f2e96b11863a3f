"""The worker runtime: the Celery app, its transport gate, the task base; one concern a module."""
