"""Checks a raw message from the queue before Celery reads it: every malformed byte is named here.

Pure functions, no I/O: the Redis transport (`worker.runtime.transport`) calls `inspect` on each
message it pops and hands only an `Accepted` one to Celery. Anything else becomes a `Refused`
that says why, with an id to dead-letter it under where one can be salvaged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

MAX_ID_LENGTH: Final = 255  # processed_tasks.task_id and task_failures.task_id
MAX_NAME_LENGTH: Final = 200  # task_failures.task_name
MAX_BODY_DEPTH: Final = 32
MAX_RETRIES: Final = 10_000
CONTENT_TYPE: Final = "application/json"
CONTENT_ENCODING: Final = "utf-8"

# Headers Celery reads in the main process, and what each must be.
_OPTIONAL_TEXT_HEADERS: Final = (
    "lang",
    "root_id",
    "parent_id",
    "group",
    "shadow",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "correlation_id",
)

# Best-effort salvage from bytes that cannot be parsed: `"id": "..."` not inside a JSON string
# (inside one the quotes would be escaped). Base64 bodies never contain a quote.
_ID_PATTERN: Final = re.compile(rb'(?<![\\\w])"id"\s*:\s*"((?:[^"\\]|\\.){1,1024})"')
_TASK_PATTERN: Final = re.compile(rb'(?<![\\\w])"task"\s*:\s*"((?:[^"\\]|\\.){1,1024})"')


@dataclass(frozen=True)
class Limits:
    """What a message may be: the worker's settings, passed in as values."""

    max_bytes: int
    max_delay_seconds: float
    # Producers' clocks may run a little ahead of the worker's.
    clock_skew_seconds: float = 5.0


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


class _Reject(Exception):
    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def digest(raw: bytes) -> str:
    """A short, stable name for raw bytes in logs and the quarantine."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def usable_id(value: object) -> bool:
    """True for a task id the ledger can store as it is: printable text of 1-255 characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def sanitise(value: object, limit: int) -> str:
    """`value` as printable text of at most `limit` characters (control characters escaped)."""
    text = value if isinstance(value, str) else repr(value)
    cleaned = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text
    )
    return cleaned[:limit]


def salvage_id(value: object, raw: bytes) -> str | None:
    """The id to dead-letter a refused message under, or None when it has none at all.

    A usable id is kept. An unusable one (too long, control characters, not text) becomes a
    printable prefix plus a hash of the original, so two different bad ids never share a
    dead letter. A missing id becomes a hash of the whole message, stable across copies.
    """
    if usable_id(value):
        return str(value)
    if value is None:
        return None
    original = value if isinstance(value, str) else repr(value)
    tag = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"invalid-id:{tag}:{sanitise(original, MAX_ID_LENGTH - 28)}"


def _salvage_from_bytes(raw: bytes) -> tuple[object, str]:
    """Id and task name found by pattern in bytes that could not be decoded."""
    found_id, found_task = _ID_PATTERN.search(raw), _TASK_PATTERN.search(raw)

    def text(match: re.Match[bytes] | None) -> str | None:
        if match is None:
            return None
        try:
            value = json.loads(b'"' + match.group(1) + b'"')
        except ValueError:
            value = match.group(1).decode("utf-8", "replace")
        return value if isinstance(value, str) else None

    return text(found_id), text(found_task) or "unknown"


def _refused_from_bytes(raw: bytes, error: _Reject) -> Refused:
    task_id, task_name = _salvage_from_bytes(raw)
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
            _Reject(
                "MessageTooLarge",
                f"message of {len(raw)} bytes, headers included, exceeds "
                f"MAX_MESSAGE_BYTES={limits.max_bytes}; refused without decoding it",
            ),
        )
    try:
        payload = _decode_json(raw, "envelope")
    except _Reject as error:
        return _refused_from_bytes(raw, error)
    headers = payload.get("headers") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(headers, dict):
        shape = "an object" if isinstance(payload, dict) else f"a JSON {_kind(payload)}"
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
        _check_envelope(payload)
        body = _decode_body(payload)
        _check_body(body)
        _check_headers(headers, limits, now or datetime.now(UTC))
    except _Reject as error:
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


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _shape(value: object) -> str:
    if isinstance(value, list) and len(value) <= 5:
        return "[" + ", ".join(_kind(item) for item in value) + "]"
    return f"a JSON {_kind(value)}"


def _decode_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Reject("UndecodableMessage", f"{what} is not UTF-8 ({error.reason} at byte "
                      f"{error.start})") from None  # fmt: skip
    try:
        return json.loads(text)
    except RecursionError:
        raise _Reject("MalformedMessage", f"{what} is nested too deeply to decode") from None
    except ValueError as error:
        raise _Reject("MalformedMessage", f"{what} is not JSON: {error}") from None


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Reject("MalformedMessage", reason)


def inspect_control(raw: bytes) -> Accepted | Refused:
    """Accept a message of Celery's own (remote control, replies) kombu can build, or say why not.

    Only what kombu itself reads is checked: Celery's control consumer survives any body.
    """
    try:
        payload = _decode_json(raw, "envelope")
    except _Reject as error:
        return Refused(error.error_class, error.reason, digest(raw), len(raw))
    problem = control_problem(payload)
    if problem is not None:
        return Refused("MalformedMessage", problem, digest(raw), len(raw))
    return Accepted(payload)


def control_problem(payload: Any) -> str | None:
    """What keeps kombu from building a message out of a decoded `payload`, if anything."""
    if not isinstance(payload, dict):
        return f"envelope must be an object, got a JSON {_kind(payload)}"
    try:
        _check_properties(payload)
        _require(
            payload.get("headers") is None or isinstance(payload.get("headers"), dict),
            "headers must be an object or null",
        )
        body = payload.get("body")
        _require(body is None or isinstance(body, str), "body must be base64 text or null")
        if body:
            base64.b64decode(body, validate=True)
    except _Reject as error:
        return error.reason
    except (binascii.Error, ValueError):
        return "body is not base64"
    return None


def _check_properties(payload: dict[str, Any]) -> None:
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise _Reject("MalformedMessage", "properties must be an object")
    tag = properties.get("delivery_tag")
    _require(isinstance(tag, str) and 0 < len(tag) <= 255, "properties.delivery_tag must be text")
    info = properties.get("delivery_info")
    _require(
        isinstance(info, dict)
        and isinstance(info.get("exchange"), str)
        and isinstance(info.get("routing_key"), str),
        "properties.delivery_info must be an object with exchange and routing_key",
    )
    _require(
        properties.get("body_encoding") == "base64",
        f"properties.body_encoding must be 'base64', got {properties.get('body_encoding')!r:.40}",
    )


def _check_envelope(payload: dict[str, Any]) -> None:
    _check_properties(payload)
    content_type = payload.get("content-type")
    if content_type != CONTENT_TYPE:
        raise _Reject(
            "ContentDisallowed",
            f"content type {content_type!r:.60} refused: this worker accepts {CONTENT_TYPE} only",
        )
    encoding = payload.get("content-encoding")
    _require(
        encoding == CONTENT_ENCODING,
        f"content-encoding must be {CONTENT_ENCODING!r}, got {encoding!r:.40}",
    )


def _decode_body(payload: dict[str, Any]) -> Any:
    body = payload.get("body")
    if not isinstance(body, str):
        raise _Reject("MalformedMessage", f"body must be base64 text, got a JSON {_kind(body)}")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject("MalformedMessage", "body is not base64") from None
    return _decode_json(raw, "body")


def _check_body(decoded: Any) -> None:
    _require(
        isinstance(decoded, list)
        and len(decoded) == 3
        and isinstance(decoded[0], list)
        and isinstance(decoded[1], dict)
        and (decoded[2] is None or isinstance(decoded[2], dict)),
        "body must be [args (array), kwargs (object), embed (object)], got " + _shape(decoded),
    )
    _require(_depth(decoded) <= MAX_BODY_DEPTH, f"body nested deeper than {MAX_BODY_DEPTH}")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_BODY_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def arguments(body: Any) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs of a decoded body, to keep with the dead letter ([] and {} if none).

    A body that is a bare object (`{"post_id": 1}`, a common mistake of producers not written
    in Python) is kept as the keyword arguments it was meant to be, so it can be retried.
    """
    if _depth(body) > MAX_BODY_DEPTH:
        return [], {}
    if isinstance(body, dict):
        return [], body
    if isinstance(body, list) and len(body) == 3:
        args, kwargs = body[0], body[1]
        if isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    return [], {}


def _check_headers(headers: dict[str, Any], limits: Limits, now: datetime) -> None:
    name = headers.get("task")
    _require(
        isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and name.isprintable(),
        f"headers.task must be a task name of 1-{MAX_NAME_LENGTH} printable characters, "
        f"got {sanitise(name, 60)}",
    )
    task_id = headers.get("id")
    if task_id is not None and not usable_id(task_id):
        raise _Reject(
            "InvalidTaskId",
            f"headers.id must be 1-{MAX_ID_LENGTH} printable characters, got "
            f"{_kind(task_id)} {sanitise(task_id, 60)}"
            + (f" of {len(task_id)} characters" if isinstance(task_id, str) else ""),
        )
    for key in _OPTIONAL_TEXT_HEADERS:
        value = headers.get(key)
        _require(value is None or isinstance(value, str), f"headers.{key} must be text or null")
    retries = headers.get("retries", 0)
    _require(
        retries is None or (type(retries) is int and 0 <= retries <= MAX_RETRIES),
        f"headers.retries must be a whole number from 0 to {MAX_RETRIES}, got "
        f"{sanitise(retries, 40)}",
    )
    _check_timelimit(headers.get("timelimit"))
    _timestamp(headers, "expires")
    eta = _timestamp(headers, "eta")
    if eta is not None:
        ahead = (eta - now).total_seconds()
        if ahead > limits.max_delay_seconds + limits.clock_skew_seconds:
            raise _Reject(
                "EtaTooFar",
                f"eta {eta.isoformat()} is {ahead:.0f}s ahead; the limit is "
                f"{limits.max_delay_seconds:.0f}s (BROKER_VISIBILITY_TIMEOUT minus "
                "TASK_TIME_LIMIT), beyond which Redis would hand the held message out again",
            )


def _check_timelimit(value: object) -> None:
    if value is None:
        return

    def seconds(item: object) -> bool:
        return item is None or (
            isinstance(item, int | float) and not isinstance(item, bool) and 0 <= item < 1e9
        )

    _require(
        isinstance(value, list) and len(value) == 2 and all(seconds(item) for item in value),
        f"headers.timelimit must be [soft, hard] seconds or null, got {sanitise(value, 40)}",
    )


def _timestamp(headers: dict[str, Any], key: str) -> datetime | None:
    value = headers.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise _Reject(
            "MalformedMessage",
            f"headers.{key} must be an ISO 8601 time or null, got {sanitise(value, 60)}",
        ) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
