"""Celery configuration: maps the worker's settings onto Celery's names, nothing more."""

from __future__ import annotations

from datetime import timedelta

from celery.schedules import crontab
from kombu import Queue

from worker import contracts
from worker.config import get_settings
from worker.contracts import DEACTIVATE_DORMANT_USERS, FLUSH_VIEW_COUNTS, PRUNE_PROCESSED_TASKS

_settings = get_settings()

broker_url = _settings.redis_url.get_secret_value()
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
broker_transport_options = {
    "visibility_timeout": _settings.broker_visibility_timeout,
    "socket_keepalive": True,
    "health_check_interval": 10,
}
broker_heartbeat = 0
result_backend = None
task_ignore_result = True

include = [
    "tasks.posts",
    "tasks.users",
    "tasks.maintenance",
    "tasks.outbox",
    *_settings.extra_task_modules,
]

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

task_default_queue = _settings.task_queue
task_queues = (Queue(_settings.task_queue),)
task_create_missing_queues = False

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True
# A hard time limit kills the child: requeue so the delivery cap (MAX_DELIVERIES) decides.
task_acks_on_timeout = False
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit
worker_concurrency = _settings.pool_children
worker_prefetch_multiplier = _settings.worker_prefetch_multiplier
worker_hijack_root_logger = False
worker_redirect_stdouts = False
worker_send_task_events = _settings.worker_task_events
worker_cancel_long_running_tasks_on_connection_loss = False

timezone = "UTC"
enable_utc = True
beat_schedule = {
    "deactivate-dormant-users-daily": {
        "task": DEACTIVATE_DORMANT_USERS,
        "schedule": crontab(hour=3, minute=15),
        "kwargs": {"inactive_days": _settings.dormant_after_days},
    },
    "prune-processed-tasks-hourly": {
        "task": PRUNE_PROCESSED_TASKS,
        "schedule": timedelta(hours=1),
    },
    # No expiry: behind a long queue an expiring flush would never run; a spare one is cheap.
    "flush-view-counts": {
        "task": FLUSH_VIEW_COUNTS,
        "schedule": timedelta(seconds=_settings.view_flush_interval),
    },
    # Outbox rows wait at most this long; a run that expires unstarted is simply skipped.
    "relay-outbox": {
        "task": contracts.OUTBOX_RELAY,
        "schedule": timedelta(seconds=2),
        "options": {"expires": 10},
    },
    # The /metrics gauges that need PostgreSQL (worker.operations.backlog); a late run is stale.
    "sample-metrics": {
        "task": contracts.SAMPLE_METRICS,
        "schedule": timedelta(seconds=contracts.SAMPLE_METRICS_INTERVAL),
        "options": {"expires": contracts.SAMPLE_METRICS_INTERVAL},
    },
}
