"""The worker's Celery app: the shared app plus the hooks only a worker needs.

An engine per pool child (made after fork), refusals dead-lettered, kombu's Redis transport
behind the envelope gate for the worker's own connections (producers keep the stock one), and
Celery's log lines for idle ticks and dead-lettered failures moved to DEBUG (`logs`), each
task's ids bound to the lines logged about it (`log_context`), and with LOG_FORMAT=json every
line one JSON object (`json_logs`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.apps import worker as celery_worker_program
from celery.exceptions import NotRegistered
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_unknown,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

from worker import db
from worker.config import ConfigError, get_settings
from worker.operations import budget, heartbeat, probes
from worker.runtime import (
    dead_letters,
    instrumentation,
    json_logs,
    log_context,
    logs,
    refusals,
)

try:
    from worker.celery_app import app as app
except ConfigError as error:
    # `celery -A worker.app` would bury these lines under its usage text and a traceback.
    raise SystemExit(str(error)) from None

log = logging.getLogger(__name__)
logs.install(dead_lettered=dead_letters.logged)


def _log_json(loglevel: int | None = None, logfile: str | None = None, **_: Any) -> None:
    json_logs.configure(loglevel, logfile)
    # A print() in a task, or a traceback written to stderr, becomes a JSON line as well.
    redirected = logging.getLogger("celery.redirected")
    app.log.redirect_stdouts_to_logger(redirected, app.conf.worker_redirect_stdouts_level)


def _log_json_from_the_start(options: dict[str, Any], **_: Any) -> None:
    # Sent before the worker checks its privileges, whose warning would be the first line.
    json_logs.configure(options.get("loglevel"), options.get("logfile"))


def _banner_as_json(instance: Any, **_: Any) -> None:
    # Sent just before the worker prints its banner: log it as one JSON line instead.
    instance.quiet = True
    log.info("%s", json_logs.banner(instance))


if get_settings().log_format == "json":
    # A receiver of setup_logging replaces Celery's own logging set-up (its text lines).
    setup_logging.connect(_log_json, weak=False)
    celeryd_init.connect(_log_json_from_the_start, weak=False)
    celeryd_after_setup.connect(_banner_as_json, weak=False)
    # Printed, not logged, by Celery: the shutdown notices and a standalone beat's banners.
    celery_worker_program.safe_say = json_logs.say  # type: ignore[attr-defined]
    app.Beat = json_logs.quiet_beat(app)  # type: ignore[misc]

app.conf.update(
    broker_transport="worker.runtime.transport:Transport",
    worker_consumer="worker.runtime.consumer:Consumer",
)
app.steps["consumer"].add(probes.ConsumerProbe)
# /metrics: each run counted in this process as Celery reports it (unless WORKER_HTTP_PORT=0).
instrumentation.install()


@celeryd_after_setup.connect
def _check_connection_budget(instance: Any, **_: Any) -> None:
    # Logging is set up and no child is forked yet: a node that alone would overrun
    # PostgreSQL stops here, before it holds anything. The check's one connection is closed.
    settings = get_settings()
    node = budget.NodeBudget.of(settings, instance.concurrency, beat=instance.beat is not None)
    refusal = budget.check_node(settings, node)
    if refusal is not None:
        log.critical("%s", refusal)
        raise SystemExit(1)


@celeryd_after_setup.connect
def _serve_probes(**_: Any) -> None:
    probes.serve(get_settings())


@worker_ready.connect
def _publish_heartbeat(sender: Any, **_: Any) -> None:
    # Workers online, for the dashboard: this node, its queues and pool, every few seconds.
    queues = [queue.name for queue in sender.task_consumer.queues]
    heartbeat.start(get_settings(), sender.hostname, queues, sender.pool)


@worker_shutting_down.connect
def _not_ready_once_shutting_down(**_: Any) -> None:
    probes.shutting_down()
    heartbeat.stop()


@task_received.connect
def _note_task_received(**_: Any) -> None:
    probes.task_received()


@task_prerun.connect
def _bind_task_to_its_log_lines(task: Any, **_: Any) -> None:
    log_context.enter_task(task)


@task_postrun.connect
def _unbind_task_from_log_lines(**_: Any) -> None:
    log_context.leave_task()


@worker_process_init.connect
def _create_engine_in_child(**_: Any) -> None:
    # The child's engine is made here, after fork, so no pooled connection crosses a fork.
    db.get_engine()
    # The main process dispatches every message and acknowledges every result, one at a time:
    # when children and PostgreSQL fill the CPUs, it must not wait behind them for a slice.
    nice = get_settings().worker_child_nice
    if nice:
        os.nice(nice)


@worker_process_shutdown.connect
def _dispose_engine_in_child(**_: Any) -> None:
    db.dispose_engine()


@task_rejected.connect
def _dead_letter_refused_message(message: Any, exc: BaseException | None, **_: Any) -> None:
    # Celery rejected it unrun (worker.runtime.transport already refused what it knows).
    refusals.Refuser.from_settings(get_settings()).refuse_celery_message(app, message, exc)


@task_unknown.connect
def _dead_letter_unknown_task(message: Any, name: str, **_: Any) -> None:
    error = NotRegistered(f"no task named {name!r} in this worker")
    refusals.Refuser.from_settings(get_settings()).refuse_celery_message(app, message, error)
