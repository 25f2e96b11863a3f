"""Celery's consumer with a last line of defence: no message can raise out of its handler.

`worker.runtime.transport` refuses every malformed message we know of before Celery reads it.
Should a message still make Celery's own handler raise (a case not yet foreseen), it is
acknowledged (out of the queue and of `unacked`) and dead-lettered or quarantined here instead
of stopping the worker. Selected by `worker_consumer` in celeryconfig.py.

It also waits at most RECONNECT_INTERVAL between attempts to reach a lost broker (kombu's
default grows to 30 s), so a worker is consuming and ready again within seconds of Redis, and
each second of waiting ticks the liveness probe: waiting for the broker is not a hung loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from worker.config import get_settings
from worker.operations import probes
from worker.runtime import log_context, refusals

log = logging.getLogger(__name__)

RECONNECT_INTERVAL = 2.0


class Consumer(CeleryConsumer):
    """Celery's consumer whose task handler and decode-error handler refuse instead of raising."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            try:
                with log_context.handling(message):  # "received" and the rest carry its ids
                    return handle(message)
            except Exception as error:
                log.exception("could not hand a message to a task; refusing it")
                self._refuse(message, error)
                return None

        return on_task_received

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def ensure_connection(*args: Any, callback: Any = None, **options: Any) -> Any:
            def waiting() -> None:  # called every second of the wait, and before each attempt
                probes.main_loop_ticked()
                if callback is not None:
                    callback()

            options.update(interval_start=1, interval_step=1, interval_max=RECONNECT_INTERVAL)
            return ensure(*args, callback=waiting, **options)

        conn.ensure_connection = ensure_connection
        return super().ensure_connected(conn)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        # Celery logs and acknowledges (drops) such a message; it is kept as well here.
        self._refuse(message, exc)

    def _refuse(self, message: Any, error: BaseException) -> None:
        try:
            if not message.acknowledged:
                message.ack()
        except Exception:
            log.exception("could not acknowledge a refused message")
        refusals.Refuser.from_settings(get_settings()).refuse_celery_message(
            self.app, message, error
        )
