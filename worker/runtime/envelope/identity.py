"""Names for refused messages: a digest of their bytes, and an id to dead-letter them under."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final

from worker.contracts import MAX_TASK_ID_LENGTH

MAX_ID_LENGTH: Final = MAX_TASK_ID_LENGTH


MAX_NAME_LENGTH: Final = 200  # task_failures.task_name


# Best-effort salvage from bytes that cannot be parsed: `"id": "..."` not inside a JSON string
# (inside one the quotes would be escaped). Base64 bodies never contain a quote.
_ID_PATTERN: Final = re.compile(rb'(?<![\\\w])"id"\s*:\s*"((?:[^"\\]|\\.){1,1024})"')


_TASK_PATTERN: Final = re.compile(rb'(?<![\\\w])"task"\s*:\s*"((?:[^"\\]|\\.){1,1024})"')


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


def salvage_from_bytes(raw: bytes) -> tuple[object, str]:
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
