"""Buffered view counting, Redis side: producers add to a pending hash, the flush moves it aside."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Final

from pydantic import Field, StrictInt, TypeAdapter, ValidationError
from redis import Redis
from redis.exceptions import NoScriptError

from worker.config import get_settings
from worker.contracts import BIGINT_MAX, InvalidTaskArguments, RowId
from worker.per_process import PerProcess

# posts.view_count is an INTEGER column: one call can never add more than it holds.
VIEW_COUNT_MAX: Final = 2**31 - 1
BATCH_TASK_NAME: Final = "views.batch"
# A reserved, non-numeric field of the pending hash: the batch id born with it. It is set when
# the hash is created and renamed aside with it, so a copy of the hash that a Redis restore
# brings back still carries the id the ledger knows it by.
BATCH_ID_FIELD: Final = "_batch"

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
# client more than Redis spends on the HINCRBYs. ARGV[2] is a fresh batch id, kept only by the
# call that creates the hash.
_ADD_VIEWS = _Script(f"""
local added = 0
for post_id, views in string.gmatch(ARGV[1], '(%d+):(%d+)') do
    redis.call('HINCRBY', KEYS[1], post_id, views)
    added = added + 1
end
if added > 0 then
    redis.call('HSETNX', KEYS[1], '{BATCH_ID_FIELD}', ARGV[2])
end
return added
""")
# Moves the pending hash aside only if it still carries the id the flush read (ARGV[2], '' for
# a hash of an older producer, which has none and is moved as ARGV[1]). Replies with the id it
# moved ('' if none), then every registered batch id.
_MOVE_ASIDE = _Script(f"""
local moved = ''
local current = redis.call('HGET', KEYS[1], '{BATCH_ID_FIELD}') or ''
if current == ARGV[2] and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[2])
    redis.call('SADD', KEYS[3], ARGV[1])
    moved = ARGV[1]
end
local reply = redis.call('SMEMBERS', KEYS[3])
table.insert(reply, 1, moved)
return reply
""")

# One bulk string instead of a reply of 2N elements: parsing that reply costs the client more
# than Redis spends joining the fields.
_READ_BATCH = _Script("return table.concat(redis.call('HGETALL', KEYS[1]), ',')")


def _new_client() -> Redis:
    url = get_settings().redis_url.get_secret_value()
    return Redis.from_url(url, health_check_interval=10)


# A forked child leaves its parent's sockets alone and makes its own client on first use.
_client = PerProcess(_new_client)


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
    """Buffer one view of `post_id` (one EVALSHA); the next flush adds it to the post."""
    if not _is_row_id(post_id):
        shown = f"{post_id!r} ({type(post_id).__name__})"[:80]
        raise InvalidTaskArguments(
            f"record_view: post_id must be an integer from 1 to {BIGINT_MAX}, got {shown}"
        )
    _run(redis, _ADD_VIEWS, [buffer_keys(queue).pending], [f"{post_id}:1", new_batch_id()])


def record_views(redis: Redis, counts: Mapping[int, int], *, queue: str | None = None) -> None:
    """Buffer `{post_id: views}` in one round trip; every id and count is checked first."""
    if not isinstance(counts, Mapping):
        kind = type(counts).__name__
        raise InvalidTaskArguments(f"record_views: counts must be a mapping, got {kind}")
    valid = _checked(counts)
    if not valid:
        return
    packed = ",".join([f"{post_id}:{views}" for post_id, views in valid.items()])
    _run(redis, _ADD_VIEWS, [buffer_keys(queue).pending], [packed, new_batch_id()])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_batch_id() -> str:
    """A unique, time-ordered batch id; it is also the batch's key in the processed_tasks ledger."""
    # os.urandom rather than uuid4: every producer call makes one, and this is a third the cost.
    return f"views-{time.time_ns():020d}-{os.urandom(6).hex()}"


def pending_batch_id(redis: Redis, keys: BufferKeys) -> str | None:
    """The id born with the pending hash (None: nothing pending, or an older producer's hash)."""
    batch_id = redis.hget(keys.pending, BATCH_ID_FIELD)
    return None if batch_id is None else _text(batch_id)


@dataclass(frozen=True)
class MovedAside:
    """What `move_aside` did: the batch it moved aside, if any, and every unflushed batch."""

    batch_id: str | None
    batch_ids: list[str]


def move_aside(redis: Redis, keys: BufferKeys, pending_id: str | None = None) -> MovedAside:
    """Atomically rename the pending hash to its batch and register it; list unflushed batches.

    `pending_id` is what `pending_batch_id` read: the hash is moved only if it still carries that
    id (a hash without one gets a new id), so the caller knows which hash it checked. The rename
    and the registration happen in one script: no view is ever outside both the pending hash and
    a registered batch.
    """
    batch_id = pending_id or new_batch_id()
    reply = _run(
        redis,
        _MOVE_ASIDE,
        [keys.pending, keys.batch(batch_id), keys.batches],
        [batch_id, pending_id or ""],
    )
    moved, *members = (_text(item) for item in reply)
    return MovedAside(batch_id=moved or None, batch_ids=sorted(members))


def _read_counts(redis: Redis, key: str) -> dict[int, int] | None:
    packed = _run(redis, _READ_BATCH, [key], [])
    if not packed:
        return None
    fields = packed.split(b"," if isinstance(packed, bytes) else ",")
    post_ids, views = fields[0::2], fields[1::2]
    reserved = BATCH_ID_FIELD.encode() if isinstance(packed, bytes) else BATCH_ID_FIELD
    if reserved in post_ids:
        at = post_ids.index(reserved)
        del post_ids[at], views[at]
    return dict(zip(map(int, post_ids), map(int, views), strict=True))


def read_batch(redis: Redis, keys: BufferKeys, batch_id: str) -> dict[int, int] | None:
    """The `{post_id: views}` of a moved-aside batch; None if its hash is gone from Redis."""
    return _read_counts(redis, keys.batch(batch_id))


def forget_batch(redis: Redis, keys: BufferKeys, batch_id: str) -> None:
    """Delete a batch (applied, or not to be applied) and unregister it, in one transaction."""
    pipe = redis.pipeline(transaction=True)
    pipe.unlink(keys.batch(batch_id))  # frees a large hash off Redis's main thread
    pipe.srem(keys.batches, batch_id)
    pipe.execute()


def pending_views(redis: Redis, keys: BufferKeys) -> int:
    """Views buffered but not yet committed: pending plus every unflushed batch (monitoring)."""
    hashes = [keys.pending, *(keys.batch(_text(b)) for b in redis.smembers(keys.batches))]
    return sum(sum((_read_counts(redis, key) or {}).values()) for key in hashes)


def get_redis() -> Redis:
    """This process's Redis client for REDIS_URL, created on first use and again after fork."""
    return _client.get()
