"""The checks of one task message, part by part: envelope, properties, body, headers."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from worker.runtime.envelope.identity import MAX_ID_LENGTH, MAX_NAME_LENGTH, sanitise, usable_id

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


@dataclass(frozen=True)
class Limits:
    """What a message may be: the worker's settings, passed in as values."""

    max_bytes: int
    max_delay_seconds: float
    # Producers' clocks may run a little ahead of the worker's.
    clock_skew_seconds: float = 5.0


class Reject(Exception):
    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def shape(value: object) -> str:
    if isinstance(value, list) and len(value) <= 5:
        return "[" + ", ".join(kind(item) for item in value) + "]"
    return f"a JSON {kind(value)}"


def decode_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Reject("UndecodableMessage", f"{what} is not UTF-8 ({error.reason} at byte "
                      f"{error.start})") from None  # fmt: skip
    try:
        return json.loads(text)
    except RecursionError:
        raise Reject("MalformedMessage", f"{what} is nested too deeply to decode") from None
    except ValueError as error:
        raise Reject("MalformedMessage", f"{what} is not JSON: {error}") from None


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise Reject("MalformedMessage", reason)


def check_properties(payload: dict[str, Any]) -> None:
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise Reject("MalformedMessage", "properties must be an object")
    tag = properties.get("delivery_tag")
    require(isinstance(tag, str) and 0 < len(tag) <= 255, "properties.delivery_tag must be text")
    info = properties.get("delivery_info")
    require(
        isinstance(info, dict)
        and isinstance(info.get("exchange"), str)
        and isinstance(info.get("routing_key"), str),
        "properties.delivery_info must be an object with exchange and routing_key",
    )
    require(
        properties.get("body_encoding") == "base64",
        f"properties.body_encoding must be 'base64', got {properties.get('body_encoding')!r:.40}",
    )


def check_envelope(payload: dict[str, Any]) -> None:
    check_properties(payload)
    content_type = payload.get("content-type")
    if content_type != CONTENT_TYPE:
        raise Reject(
            "ContentDisallowed",
            f"content type {content_type!r:.60} refused: this worker accepts {CONTENT_TYPE} only",
        )
    encoding = payload.get("content-encoding")
    require(
        encoding == CONTENT_ENCODING,
        f"content-encoding must be {CONTENT_ENCODING!r}, got {encoding!r:.40}",
    )


def decode_body(payload: dict[str, Any]) -> Any:
    body = payload.get("body")
    if not isinstance(body, str):
        raise Reject("MalformedMessage", f"body must be base64 text, got a JSON {kind(body)}")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise Reject("MalformedMessage", "body is not base64") from None
    return decode_json(raw, "body")


def check_body(decoded: Any) -> None:
    require(
        isinstance(decoded, list)
        and len(decoded) == 3
        and isinstance(decoded[0], list)
        and isinstance(decoded[1], dict)
        and (decoded[2] is None or isinstance(decoded[2], dict)),
        "body must be [args (array), kwargs (object), embed (object)], got " + shape(decoded),
    )
    require(_depth(decoded) <= MAX_BODY_DEPTH, f"body nested deeper than {MAX_BODY_DEPTH}")


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


def check_headers(headers: dict[str, Any], limits: Limits, now: datetime) -> None:
    name = headers.get("task")
    require(
        isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and name.isprintable(),
        f"headers.task must be a task name of 1-{MAX_NAME_LENGTH} printable characters, "
        f"got {sanitise(name, 60)}",
    )
    task_id = headers.get("id")
    if task_id is not None and not usable_id(task_id):
        raise Reject(
            "InvalidTaskId",
            f"headers.id must be 1-{MAX_ID_LENGTH} printable characters, got "
            f"{kind(task_id)} {sanitise(task_id, 60)}"
            + (f" of {len(task_id)} characters" if isinstance(task_id, str) else ""),
        )
    for key in _OPTIONAL_TEXT_HEADERS:
        value = headers.get(key)
        require(value is None or isinstance(value, str), f"headers.{key} must be text or null")
    retries = headers.get("retries", 0)
    require(
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
            raise Reject(
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

    require(
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
        raise Reject(
            "MalformedMessage",
            f"headers.{key} must be an ISO 8601 time or null, got {sanitise(value, 60)}",
        ) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
