"""Argument contracts: the one definition both producers and the worker validate against."""

from __future__ import annotations

from typing import Any

import pytest

from worker.contracts import (
    BIGINT_MAX,
    DEACTIVATE_DORMANT_USERS,
    RECORD_VIEW,
    InvalidTaskArguments,
    RecordViewArgs,
    validate_arguments,
)


@pytest.mark.parametrize("good", [1, 42, BIGINT_MAX])
def test_positive_ids_pass(good: int) -> None:
    assert validate_arguments(RECORD_VIEW, [good]) == RecordViewArgs(post_id=good)
    assert validate_arguments(RECORD_VIEW, kwargs={"post_id": good}).post_id == good  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "bad", [0, -1, BIGINT_MAX + 1, True, False, "1", "abc", 1.0, 1.5, None, [1], {"id": 1}]
)
def test_bad_ids_are_refused_with_the_field_name(bad: Any) -> None:
    with pytest.raises(InvalidTaskArguments, match=r"tasks\.posts\.record_view: .*post_id"):
        validate_arguments(RECORD_VIEW, [bad])


def test_unknown_missing_and_extra_arguments_are_refused() -> None:
    with pytest.raises(InvalidTaskArguments, match=r"post_id.*nothing"):
        validate_arguments(RECORD_VIEW, [])
    with pytest.raises(InvalidTaskArguments, match="postid"):
        validate_arguments(RECORD_VIEW, [], {"post_id": 1, "postid": 2})
    with pytest.raises(InvalidTaskArguments, match="at most 1 positional"):
        validate_arguments(RECORD_VIEW, [1, 2])
    with pytest.raises(InvalidTaskArguments, match="multiple values"):
        validate_arguments(RECORD_VIEW, [1], {"post_id": 1})
    with pytest.raises(InvalidTaskArguments, match="unknown task name"):
        validate_arguments("tasks.nope", [])


def test_defaults_apply() -> None:
    assert validate_arguments(DEACTIVATE_DORMANT_USERS).model_dump() == {"inactive_days": 365}
