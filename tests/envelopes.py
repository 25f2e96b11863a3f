"""Hand-written queue messages, as a producer in another language (or an attacker) writes them.

`kombu_message` is a well-formed protocol-2 task message exactly as kombu's Redis transport
stores it; `malformed_messages` breaks it in every way the worker has been seen to choke on.
Shared by the envelope unit tests and the fault test that pushes them into a live worker.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

RECORD_VIEW = "tasks.posts.record_view"


def encode_body(body: Any) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


def kombu_message(
    queue: str,
    task_id: str | None,
    args: list[Any] | None = None,
    *,
    task: Any = RECORD_VIEW,
    headers: dict[str, Any] | None = None,
    body: str | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A task message as kombu stores it in a Redis list (JSON envelope, base64 body)."""
    message_headers: dict[str, Any] = {
        "lang": "go",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": "hand-written",
    }
    if task_id is None:
        del message_headers["id"]
    message_headers.update(headers or {})
    message = {
        "body": body if body is not None else encode_body([args or [], {}, {}]),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message_headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    message.update(top)
    return message


def raw(message: Any) -> bytes:
    return json.dumps(message).encode()


@dataclass(frozen=True)
class Malformed:
    """One bad message and what must become of it: a dead letter (with an id) or quarantine."""

    name: str
    raw: bytes
    error_class: str
    dead_letter_id: str | None  # None: quarantined; "invalid-id:*" style prefixes end with "*"


def malformed_messages(queue: str, post: int) -> list[Malformed]:
    """More than twenty kinds of broken message, each named by what is wrong with it."""

    def dead(name: str, message: Any, error_class: str, task_id: str | None = None) -> Malformed:
        return Malformed(name, raw(message), error_class, task_id or name)

    def good(name: str, **changes: Any) -> dict[str, Any]:
        return kombu_message(queue, name, [post], **changes)

    deep = 20_000
    far = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    padding = {"argsrepr": "x" * 2_000_000}
    return [
        Malformed("not-json", b"not json at all", "MalformedMessage", None),
        Malformed("empty", b"", "MalformedMessage", None),
        Malformed("json-array", b"[1, 2, 3]", "MalformedMessage", None),
        Malformed("json-null", b"null", "MalformedMessage", None),
        Malformed("envelope-not-utf8", b"\xff\xfe{}", "UndecodableMessage", None),
        Malformed(
            "headers-not-object",
            raw(good("x", headers=None) | {"headers": "x"}),
            "MalformedMessage",
            None,
        ),
        dead("task-list", good("task-list", task=[RECORD_VIEW]), "MalformedMessage"),
        dead("task-object", good("task-object", task={"name": RECORD_VIEW}), "MalformedMessage"),
        dead(
            "timelimit-abc", good("timelimit-abc", headers={"timelimit": "abc"}), "MalformedMessage"
        ),
        dead(
            "content-type-data",
            good("content-type-data", **{"content-type": "application/data"}),
            "ContentDisallowed",
        ),
        dead(
            "body-not-base64",
            good("body-not-base64", body="%%% not base64 %%%"),
            "MalformedMessage",
        ),
        dead("body-null", good("body-null") | {"body": None}, "MalformedMessage"),
        dead(
            "body-object",
            good("body-object", body=encode_body({"post_id": post})),
            "MalformedMessage",
        ),
        dead(
            "body-not-utf8",
            good("body-not-utf8", body=base64.b64encode(b"\xff\xfe").decode()),
            "UndecodableMessage",
        ),
        dead("body-nested-deep", good("body-nested-deep", body=nested(deep)), "MalformedMessage"),
        # 30,000 deep is over the size limit once base64-encoded: refused before decoding.
        dead(
            "body-nested-30000", good("body-nested-30000", body=nested(30_000)), "MessageTooLarge"
        ),
        dead(
            "args-object",
            good("args-object", body=encode_body([{"post_id": post}, {}, {}])),
            "MalformedMessage",
        ),
        dead(
            "kwargs-list",
            good("kwargs-list", body=encode_body([[post], [1], {}])),
            "MalformedMessage",
        ),
        dead("header-oversized", good("header-oversized", headers=padding), "MessageTooLarge"),
        dead("id-too-long", good("x" * 300), "InvalidTaskId", "invalid-id:*"),
        dead("id-nul", good("nul\x00id"), "InvalidTaskId", "invalid-id:*"),
        dead("id-number", good("x", headers={"id": 12345}), "InvalidTaskId", "invalid-id:*"),
        dead("id-missing", kombu_message(queue, None, [post]), "MissingTaskId", "no-id:*"),
        dead("eta-garbage", good("eta-garbage", headers={"eta": "tomorrow"}), "MalformedMessage"),
        dead("eta-too-far", good("eta-too-far", headers={"eta": far}), "EtaTooFar"),
        dead("retries-text", good("retries-text", headers={"retries": "x"}), "MalformedMessage"),
        dead("no-properties", good("no-properties") | {"properties": None}, "MalformedMessage"),
        dead(
            "pickle",
            good("pickle", **{"content-type": "application/x-python-serialize"}),
            "ContentDisallowed",
        ),
        _nested(queue, post, deep),
    ]


def nested(depth: int) -> str:
    """A base64 body of arrays nested `depth` deep."""
    return base64.b64encode(("[" * depth + "]" * depth).encode()).decode()


def _nested(queue: str, post: int, depth: int) -> Malformed:
    # Built by hand: json.dumps itself refuses to nest this deep.
    message = kombu_message(queue, "headers-nested-very-deep", [post])
    text = json.dumps(message)
    marker = '"origin": "hand-written"'
    text = text.replace(marker, marker + ', "deep": ' + "[" * depth + "]" * depth)
    return Malformed(
        "headers-nested-very-deep", text.encode(), "MalformedMessage", "headers-nested-very-deep"
    )
