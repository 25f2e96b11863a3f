"""The Redis view buffer (real Redis): views add up in a pending hash born with its batch id,
which a flush moves aside under that id.

Applying a batch and the flush task: test_viewbuffer_flush.py. Refused ids and counts are unit
tests (tests/unit/test_view_counter.py).
"""

from __future__ import annotations

from typing import Any

import redis

from worker.producer import viewbuffer


def pending(client: redis.Redis[Any], keys: viewbuffer.BufferKeys) -> dict[int, int]:
    fields = client.hgetall(keys.pending)
    fields.pop(viewbuffer.BATCH_ID_FIELD.encode(), None)
    return {int(k): int(v) for k, v in fields.items()}


def test_views_add_up_in_the_pending_hash(
    redis_client: redis.Redis[Any], queue: str, keys: viewbuffer.BufferKeys
) -> None:
    for _ in range(3):
        viewbuffer.record_view(redis_client, 7, queue=queue)
    viewbuffer.record_views(redis_client, {7: 2, 8: 5, 2**63 - 1: 1}, queue=queue)
    viewbuffer.record_views(redis_client, {}, queue=queue)

    assert pending(redis_client, keys) == {7: 5, 8: 5, 2**63 - 1: 1}
    assert viewbuffer.pending_views(redis_client, keys) == 11


def test_the_batch_id_is_born_with_the_pending_hash_and_kept_by_later_adds(
    redis_client: redis.Redis[Any], queue: str, keys: viewbuffer.BufferKeys
) -> None:
    assert viewbuffer.pending_batch_id(redis_client, keys) is None

    viewbuffer.record_view(redis_client, 7, queue=queue)
    born = viewbuffer.pending_batch_id(redis_client, keys)
    viewbuffer.record_views(redis_client, {7: 2, 8: 5}, queue=queue)
    viewbuffer.record_view(redis_client, 8, queue=queue)

    assert born is not None
    assert born.startswith("views-")
    assert viewbuffer.pending_batch_id(redis_client, keys) == born
    assert pending(redis_client, keys) == {7: 3, 8: 6}
    assert viewbuffer.pending_views(redis_client, keys) == 9


def test_move_aside_renames_pending_and_registers_the_batch_under_its_born_id(
    redis_client: redis.Redis[Any], queue: str, keys: viewbuffer.BufferKeys
) -> None:
    viewbuffer.record_views(redis_client, {1: 3, 2: 4}, queue=queue)
    born = viewbuffer.pending_batch_id(redis_client, keys)

    moved = viewbuffer.move_aside(redis_client, keys, born)
    viewbuffer.record_view(redis_client, 1, queue=queue)  # arrives after the move: next batch

    assert moved == viewbuffer.MovedAside(batch_id=born, batch_ids=[born])
    assert redis_client.hget(keys.batch(born), viewbuffer.BATCH_ID_FIELD) == born.encode()
    assert viewbuffer.read_batch(redis_client, keys, born) == {1: 3, 2: 4}
    assert pending(redis_client, keys) == {1: 1}
    assert viewbuffer.pending_views(redis_client, keys) == 8

    next_id = viewbuffer.pending_batch_id(redis_client, keys)
    assert next_id not in (None, born)
    second = viewbuffer.move_aside(redis_client, keys, next_id)
    assert second.batch_ids == sorted([born, next_id])
    nothing = viewbuffer.move_aside(redis_client, keys, None)  # nothing pending: no new batch
    assert nothing == viewbuffer.MovedAside(batch_id=None, batch_ids=second.batch_ids)

    viewbuffer.forget_batch(redis_client, keys, born)
    assert viewbuffer.read_batch(redis_client, keys, born) is None
    assert viewbuffer.move_aside(redis_client, keys).batch_ids == [next_id]


def test_move_aside_leaves_a_pending_hash_that_is_not_the_one_read(
    redis_client: redis.Redis[Any], queue: str, keys: viewbuffer.BufferKeys
) -> None:
    # Given a flush that read the pending id, and another flush that moved that hash meanwhile
    viewbuffer.record_view(redis_client, 1, queue=queue)
    read = viewbuffer.pending_batch_id(redis_client, keys)
    viewbuffer.move_aside(redis_client, keys, read)
    viewbuffer.record_view(redis_client, 2, queue=queue)

    # When the first flush moves aside with the id it read
    moved = viewbuffer.move_aside(redis_client, keys, read)

    # Then the new pending hash stays for the next flush (its id was never checked)
    assert moved == viewbuffer.MovedAside(batch_id=None, batch_ids=[read])
    assert pending(redis_client, keys) == {2: 1}


def test_a_pending_hash_of_an_older_producer_gets_an_id_at_move_aside(
    redis_client: redis.Redis[Any], keys: viewbuffer.BufferKeys
) -> None:
    redis_client.hincrby(keys.pending, "5", 2)  # what producers did before batch ids
    assert viewbuffer.pending_batch_id(redis_client, keys) is None

    moved = viewbuffer.move_aside(redis_client, keys, None)

    assert moved.batch_id is not None
    assert moved.batch_ids == [moved.batch_id]
    assert viewbuffer.read_batch(redis_client, keys, moved.batch_id) == {5: 2}
