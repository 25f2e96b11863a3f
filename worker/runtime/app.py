"""The worker's Celery app: the shared app plus the hooks only a worker needs.

An engine per pool child (made after fork), refusals dead-lettered, kombu's Redis transport
behind the envelope gate for the worker's own connections (producers keep the stock one), and
Celery's log lines for idle ticks and dead-lettered failures moved to DEBUG (`logs`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.exceptions import NotRegistered
from celery.signals import (
    celeryd_after_setup,
    task_received,
    task_rejected,
    task_unknown,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)

from worker import db
from worker.config import ConfigError, get_settings
from worker.operations import budget, probes
from worker.runtime import dead_letters, logs, refusals

try:
    from worker.celery_app import app as app
except ConfigError as error:
    # `celery -A worker.app` would bury these lines under its usage text and a traceback.
    raise SystemExit(str(error)) from None

log = logging.getLogger(__name__)
logs.install(dead_lettered=dead_letters.logged)

app.conf.update(
    broker_transport="worker.runtime.transport:Transport",
    worker_consumer="worker.runtime.consumer:Consumer",
)
app.steps["consumer"].add(probes.ConsumerProbe)


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


@worker_shutting_down.connect
def _not_ready_once_shutting_down(**_: Any) -> None:
    probes.shutting_down()


@task_received.connect
def _note_task_received(**_: Any) -> None:
    probes.task_received()


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
