"""Checks a raw message from the queue before Celery reads it: every malformed byte is named here.

Pure functions, no I/O: the Redis transport (`worker.runtime.transport`) calls `inspect` on each
message it pops and hands only an `Accepted` one to Celery. Anything else becomes a `Refused`
that says why, with an id to dead-letter it under where one can be salvaged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.runtime.envelope.checks import (
    Limits,
    Reject,
    arguments,
    check_body,
    check_envelope,
    check_headers,
    check_properties,
    decode_body,
    decode_json,
    kind,
    require,
)
from worker.runtime.envelope.identity import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    digest,
    salvage_from_bytes,
    salvage_id,
    sanitise,
    usable_id,
)

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "Accepted",
    "Limits",
    "Refused",
    "arguments",
    "control_problem",
    "digest",
    "inspect",
    "inspect_control",
    "salvage_id",
    "sanitise",
    "usable_id",
]


@dataclass(frozen=True)
class Accepted:
    """A well-formed task message: the decoded envelope, ready for kombu and Celery."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    """A message that must not reach Celery, and everything known about it."""

    error_class: str
    reason: str
    digest: str
    size: int
    task_id: str | None = None  # where salvaged: the dead letter's id
    task_name: str = "unknown"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


def _refused_from_bytes(raw: bytes, error: Reject) -> Refused:
    task_id, task_name = salvage_from_bytes(raw)
    return Refused(
        error.error_class,
        error.reason,
        digest(raw),
        len(raw),
        task_id=salvage_id(task_id, raw),
        task_name=sanitise(task_name, MAX_NAME_LENGTH) or "unknown",
    )


def inspect(raw: bytes, limits: Limits, now: datetime | None = None) -> Accepted | Refused:
    """Accept a protocol-2 JSON task message as kombu's Redis transport stores it, or say why not.

    The size limit covers the whole envelope, headers included, and is checked first.
    """
    if len(raw) > limits.max_bytes:
        return _refused_from_bytes(
            raw,
            Reject(
                "MessageTooLarge",
                f"message of {len(raw)} bytes, headers included, exceeds "
                f"MAX_MESSAGE_BYTES={limits.max_bytes}; refused without decoding it",
            ),
        )
    try:
        payload = decode_json(raw, "envelope")
    except Reject as error:
        return _refused_from_bytes(raw, error)
    headers = payload.get("headers") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(headers, dict):
        shape = "an object" if isinstance(payload, dict) else f"a JSON {kind(payload)}"
        what = "envelope has no headers object" if isinstance(payload, dict) else "envelope"
        return Refused(
            "MalformedMessage",
            f"{what}: expected a kombu message (an object with headers), got {shape}",
            digest(raw),
            len(raw),
        )
    name = headers.get("task")
    task_name = sanitise(name, MAX_NAME_LENGTH) if isinstance(name, str) and name else "unknown"
    task_id = salvage_id(headers.get("id"), raw)
    body: Any = None
    try:
        check_envelope(payload)
        body = decode_body(payload)
        check_body(body)
        check_headers(headers, limits, now or datetime.now(UTC))
    except Reject as error:
        args, kwargs = arguments(body)
        return Refused(
            error.error_class, error.reason, digest(raw), len(raw), task_id, task_name, args, kwargs
        )
    if task_id is None:
        args, kwargs = arguments(body)
        # Without an id the ledger cannot tell a redelivered copy from a new task.
        return Refused(
            "MissingTaskId",
            "message has no id header: exactly-once needs one; refused, never run without it",
            digest(raw),
            len(raw),
            "no-id:" + hashlib.sha256(payload["body"].encode() + task_name.encode()).hexdigest(),
            task_name,
            args,
            kwargs,
        )
    return Accepted(payload)


def inspect_control(raw: bytes) -> Accepted | Refused:
    """Accept a message of Celery's own (remote control, replies) kombu can build, or say why not.

    Only what kombu itself reads is checked: Celery's control consumer survives any body.
    """
    try:
        payload = decode_json(raw, "envelope")
    except Reject as error:
        return Refused(error.error_class, error.reason, digest(raw), len(raw))
    problem = control_problem(payload)
    if problem is not None:
        return Refused("MalformedMessage", problem, digest(raw), len(raw))
    return Accepted(payload)


def control_problem(payload: Any) -> str | None:
    """What keeps kombu from building a message out of a decoded `payload`, if anything."""
    if not isinstance(payload, dict):
        return f"envelope must be an object, got a JSON {kind(payload)}"
    try:
        check_properties(payload)
        require(
            payload.get("headers") is None or isinstance(payload.get("headers"), dict),
            "headers must be an object or null",
        )
        body = payload.get("body")
        require(body is None or isinstance(body, str), "body must be base64 text or null")
        if body:
            base64.b64decode(body, validate=True)
    except Reject as error:
        return error.reason
    except (binascii.Error, ValueError):
        return "body is not base64"
    return None
