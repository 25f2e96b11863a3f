"""The buffered view counter refuses bad post ids and counts before anything reaches Redis."""

from __future__ import annotations

from typing import Any

import pytest

from worker.contracts import InvalidTaskArguments
from worker.producer.client import ViewCounter


@pytest.mark.parametrize(
    ("post_id", "message"),
    [
        ("7", r"post_id must be an integer from 1 to 9223372036854775807, got '7' \(str\)"),
        (True, r"got True \(bool\)"),
        (0, r"got 0 \(int\)"),
        (-1, r"got -1 \(int\)"),
        (2**63, r"got 9223372036854775808 \(int\)"),
        (7.0, r"got 7.0 \(float\)"),
        (1.5, r"got 1.5 \(float\)"),
        (None, r"got None \(NoneType\)"),
    ],
)
def test_record_view_refuses_a_bad_post_id(fake_redis: Any, post_id: Any, message: str) -> None:
    with pytest.raises(InvalidTaskArguments, match=message):
        ViewCounter(redis=fake_redis, queue="q").record_view(post_id)
    assert fake_redis.keys() == []


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({2: 1, "7": 1}, r"post id: Input should be a valid integer, got '7' \(str\)"),
        ({2: 1, True: 1}, r"post id: .*got True \(bool\)"),
        ({2: 1, None: 1}, r"post id: .*got None \(NoneType\)"),
        ({2: 1, 1.5: 1}, r"post id: .*got 1.5 \(float\)"),
        ({2: 1, 0: 1}, r"post id: Input should be greater than or equal to 1"),
        ({2: 1, -1: 1}, r"post id: Input should be greater than or equal to 1"),
        ({2: 1, 7: 0}, r"views for post 7: Input should be greater than or equal to 1, got 0"),
        ({2: 1, 7: 1.5}, r"views for post 7: Input should be a valid integer, got 1.5 \(float\)"),
        ({2: 1, 7: 2**31}, r"views for post 7: Input should be less than or equal to 2147483647"),
        ([(7, 1)], r"counts must be a mapping, got list"),
    ],
)
def test_record_views_refuses_bad_ids_and_counts_and_writes_nothing(
    fake_redis: Any, counts: Any, message: str
) -> None:
    with pytest.raises(InvalidTaskArguments, match=message):
        ViewCounter(redis=fake_redis, queue="q").record_views(counts)
    assert fake_redis.keys() == []
