"""Buffered view counting, Redis side: producers add to a pending hash, the flush moves it aside."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Final

from pydantic import Field, StrictInt, TypeAdapter, ValidationError
from redis import Redis
from redis.exceptions import NoScriptError

from worker.config import get_settings
from worker.contracts import BIGINT_MAX, InvalidTaskArguments, RowId

# posts.view_count is an INTEGER column: one call can never add more than it holds.
VIEW_COUNT_MAX: Final = 2**31 - 1
BATCH_TASK_NAME: Final = "views.batch"

_COUNTS = TypeAdapter(
    dict[RowId, Annotated[StrictInt, Field(ge=1, le=VIEW_COUNT_MAX)]],
    config={"strict": True},
)


@dataclass(frozen=True)
class _Script:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


def _run(redis: Redis, script: _Script, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA, falling back to EVAL (which caches the script) on a server that lacks it."""
    try:
        return redis.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return redis.eval(script.source, len(keys), *keys, *args)


# Every key of one buffer shares a hash tag, so the scripts stay valid on Redis Cluster.
# The views come as one "id:n,id:n" string: encoding thousands of separate arguments costs the
# client more than Redis spends on the HINCRBYs.
_ADD_VIEWS = _Script("""
local added = 0
for post_id, views in string.gmatch(ARGV[1], '(%d+):(%d+)') do
    redis.call('HINCRBY', KEYS[1], post_id, views)
    added = added + 1
end
return added
""")
_MOVE_ASIDE = _Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[2])
    redis.call('SADD', KEYS[3], ARGV[1])
end
return redis.call('SMEMBERS', KEYS[3])
""")

# One bulk string instead of a reply of 2N elements: parsing that reply costs the client more
# than Redis spends joining the fields.
_READ_BATCH = _Script("return table.concat(redis.call('HGETALL', KEYS[1]), ',')")

_lock = threading.Lock()
_client: Redis | None = None
_client_pid: int | None = None


@dataclass(frozen=True)
class BufferKeys:
    """The Redis keys of the view buffer flushed by the workers of one task queue."""

    pending: str
    batches: str
    batch_prefix: str

    def batch(self, batch_id: str) -> str:
        """The hash a pending hash is renamed to when it is moved aside as `batch_id`."""
        return self.batch_prefix + batch_id


@lru_cache(maxsize=64)
def buffer_keys(queue: str | None = None) -> BufferKeys:
    """Keys of the buffer for `queue` (default: TASK_QUEUE, the queue whose workers flush it)."""
    tag = "views:{" + (queue or get_settings().task_queue) + "}:"
    return BufferKeys(pending=tag + "pending", batches=tag + "batches", batch_prefix=tag + "batch:")


def _is_row_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= BIGINT_MAX


def _is_count(value: object) -> bool:
    return type(value) is int and 1 <= value <= VIEW_COUNT_MAX


def _checked(counts: Mapping[Any, Any]) -> Mapping[int, int]:
    """`counts` if every id and count is valid, else the error pydantic describes."""
    if all(_is_row_id(k) and _is_count(v) for k, v in counts.items()):
        return counts
    try:
        return _COUNTS.validate_python(dict(counts))
    except ValidationError as error:
        problems = []
        for item in error.errors()[:5]:
            loc = item["loc"]
            part = "post id" if loc[-1:] == ("[key]",) else f"views for post {loc[0]!r}"
            value = item.get("input")
            problems.append(f"{part}: {item['msg']}, got {value!r:.60} ({type(value).__name__})")
        raise InvalidTaskArguments("record_views: " + "; ".join(problems)) from None


def record_view(redis: Redis, post_id: int, *, queue: str | None = None) -> None:
    """Buffer one view of `post_id` (one HINCRBY); the next flush adds it to the post."""
    if not _is_row_id(post_id):
        shown = f"{post_id!r} ({type(post_id).__name__})"[:80]
        raise InvalidTaskArguments(
            f"record_view: post_id must be an integer from 1 to {BIGINT_MAX}, got {shown}"
        )
    redis.hincrby(buffer_keys(queue).pending, str(post_id), 1)


def record_views(redis: Redis, counts: Mapping[int, int], *, queue: str | None = None) -> None:
    """Buffer `{post_id: views}` in one round trip; every id and count is checked first."""
    if not isinstance(counts, Mapping):
        kind = type(counts).__name__
        raise InvalidTaskArguments(f"record_views: counts must be a mapping, got {kind}")
    valid = _checked(counts)
    if not valid:
        return
    packed = ",".join([f"{post_id}:{views}" for post_id, views in valid.items()])
    _run(redis, _ADD_VIEWS, [buffer_keys(queue).pending], [packed])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_batch_id() -> str:
    """A unique, time-ordered batch id; it is also the batch's key in the processed_tasks ledger."""
    return f"views-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def move_aside(redis: Redis, keys: BufferKeys) -> list[str]:
    """Atomically rename the pending hash to a new batch; return every unflushed batch id.

    The rename and the registration of the batch id happen in one script, so no view is ever
    outside both the pending hash and a registered batch.
    """
    batch_id = new_batch_id()
    members = _run(
        redis, _MOVE_ASIDE, [keys.pending, keys.batch(batch_id), keys.batches], [batch_id]
    )
    return sorted(_text(member) for member in members)


def read_batch(redis: Redis, keys: BufferKeys, batch_id: str) -> dict[int, int]:
    """The `{post_id: views}` of a moved-aside batch (empty once it has been forgotten)."""
    packed = _run(redis, _READ_BATCH, [keys.batch(batch_id)], [])
    if not packed:
        return {}
    fields = packed.split(b"," if isinstance(packed, bytes) else ",")
    return dict(zip(map(int, fields[0::2]), map(int, fields[1::2]), strict=True))


def forget_batch(redis: Redis, keys: BufferKeys, batch_id: str) -> None:
    """Delete an applied batch and unregister it, in one transaction."""
    pipe = redis.pipeline(transaction=True)
    pipe.unlink(keys.batch(batch_id))  # frees a large hash off Redis's main thread
    pipe.srem(keys.batches, batch_id)
    pipe.execute()


def pending_views(redis: Redis, keys: BufferKeys) -> int:
    """Views buffered but not yet committed: pending plus every unflushed batch (monitoring)."""
    hashes = [keys.pending, *(keys.batch(_text(b)) for b in redis.smembers(keys.batches))]
    return sum(int(v) for key in hashes for v in redis.hvals(key))


def get_redis() -> Redis:
    """This process's Redis client for REDIS_URL, created on first use and again after fork."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is not None and _client_pid == pid:
        return _client
    with _lock:
        if _client is None or _client_pid != pid:
            url = get_settings().redis_url.get_secret_value()
            _client = Redis.from_url(url, health_check_interval=10)
            _client_pid = pid
        return _client


def _forget_client_in_child() -> None:
    global _client, _client_pid, _lock
    # The parent's sockets stay the parent's: the child makes its own client on first use.
    _client, _client_pid, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_client_in_child)
