"""The retry schedule of transient database errors, as pure logic."""

from __future__ import annotations

import pytest

from worker.config import Settings
from worker.runtime.retries import backoff_bounds, backoff_seconds


def test_each_delay_keeps_at_least_half_of_its_exponential_step() -> None:
    assert [backoff_bounds(n, cap=60) for n in range(6)] == [
        (1, 2),
        (2, 4),
        (4, 8),
        (8, 16),
        (16, 32),
        (30, 60),
    ]


@pytest.mark.parametrize("retries", [0, 3, 7, 100])
def test_delays_stay_within_their_bounds_and_the_cap(retries: int) -> None:
    low, high = backoff_bounds(retries, cap=60)
    samples = [backoff_seconds(retries, cap=60) for _ in range(500)]
    assert all(low <= delay <= high <= 60 for delay in samples)


def test_default_retries_outlast_a_database_that_is_down_for_ten_seconds() -> None:
    # Given the default settings
    retries = Settings.model_fields["task_max_retries"].default
    cap = Settings.model_fields["task_retry_backoff_max"].default
    schedule = [backoff_bounds(n, cap) for n in range(retries)]
    # Then even the unluckiest draw waits well over 10 s in total before giving up,
    # and the luckiest never waits more than about a minute
    shortest = sum(low for low, _ in schedule)
    longest = sum(high for _, high in schedule)
    assert shortest >= 30
    assert longest <= 62
    # And the first retry comes quickly, for a server that only blinked
    assert schedule[0] == (1, 2)
