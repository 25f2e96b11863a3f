"""kombu's Redis transport behind a gate: a message must pass `envelope` before Celery sees it.

kombu decodes each popped message with a bare `json.loads` and builds a `Message` from whatever
keys it finds; one malformed message there raises out of the worker's event loop and stops the
process (and every worker after it, once it is back in the queue). Here every message popped from
a queue is inspected first; a refused one is dead-lettered or quarantined and never delivered, so
it is neither in the queue nor in `unacked` afterwards.

Selected by `broker_transport` in celeryconfig.py; producers keep the stock transport.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from worker.config import get_settings
from worker.runtime import envelope, refusals

log = logging.getLogger(__name__)

# kombu's Redis channel is only partly typed: its private helpers are used as kombu uses them.
_RedisChannel: Any = kombu_redis.Channel


class Channel(_RedisChannel):  # type: ignore[misc]
    """A Redis channel that inspects every message it pops before delivering it."""

    @cached_property
    def _limits(self) -> envelope.Limits:
        settings = get_settings()
        return envelope.Limits(
            max_bytes=settings.max_message_bytes,
            max_delay_seconds=settings.max_task_delay_seconds,
        )

    @cached_property
    def _refuser(self) -> refusals.Refuser:
        return refusals.Refuser.from_settings(get_settings())

    def _checked(self, item: bytes, queue: str) -> dict[str, Any] | None:
        """The decoded message if it may be delivered; else it is refused and None returned."""
        if _is_control_queue(queue):
            verdict = envelope.inspect_control(item)
        else:
            verdict = envelope.inspect(item, self._limits)
        if isinstance(verdict, envelope.Accepted):
            return verdict.payload
        self._refuse(verdict, item)
        return None

    def _refuse(self, verdict: envelope.Refused, item: bytes) -> None:
        from celery import current_app

        with self.conn_or_acquire() as client:
            self._refuser.refuse(
                verdict, item, client, refusals.app_publisher(current_app, self._refuser.queue)
            )

    # Broadcasts (remote control) arrive by PUBLISH, not from a list: the same gate, for what
    # kombu reads of them. kombu already drops what is not JSON, but not what nests too deep.
    def _receive_one(self, c: Any) -> Any:
        try:
            return super()._receive_one(c)
        except RecursionError:
            log.warning("dropped a broadcast message nested too deeply to decode")
            raise Empty() from None

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        problem = envelope.control_problem(message)
        if problem is None:
            return bool(super()._deliver_fanout_message(message, exchange))
        item = json.dumps(message).encode()
        self._refuse(
            envelope.Refused("MalformedMessage", problem, envelope.digest(item), len(item)), item
        )
        return True

    # The two methods below are kombu 5's own (kombu/transport/redis.py), with `loads(item)`
    # replaced by `_checked(item)`.
    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = self._checked(item, dest)
            if payload is not None:
                self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            for priority in self.priority_steps:
                while True:
                    item = client.rpop(self._q_for_pri(queue, priority))
                    if not item:
                        break
                    payload = self._checked(item, queue)
                    if payload is not None:
                        self._maybe_update_queues_expire(client, queue)
                        return payload
            self._maybe_update_queues_expire(client, queue)
            raise Empty()


def _is_control_queue(queue: str) -> bool:
    """Celery's own queues (remote-control mailboxes and their replies, events), not tasks."""
    return queue.endswith("pidbox") or queue.startswith("celeryev")


class Transport(kombu_redis.Transport):
    """The Redis transport of the worker's own connections."""

    Channel = Channel
