"""The envelope gate as pure logic: which raw messages reach Celery, what is kept of the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.envelopes import (
    Malformed,
    encode_body,
    kombu_message,
    malformed_messages,
    raw,
)
from worker.runtime.envelope import Accepted, Limits, Refused, inspect
from worker.runtime.refusals import Refuser

QUEUE = "worker"
LIMITS = Limits(max_bytes=64 * 1024, max_delay_seconds=3510)
CASES = malformed_messages(QUEUE, 7)


def refused(message: bytes) -> Refused:
    verdict = inspect(message, LIMITS)
    assert isinstance(verdict, Refused), verdict
    return verdict


def test_a_well_formed_hand_written_message_is_accepted_unchanged() -> None:
    message = kombu_message(QUEUE, "good-1", [7])
    verdict = inspect(raw(message), LIMITS)
    assert verdict == Accepted(message)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_malformed_message_is_refused_with_its_reason(case: Malformed) -> None:
    verdict = refused(case.raw)
    assert verdict.error_class == case.error_class
    assert verdict.digest.startswith("sha256:")
    assert verdict.size == len(case.raw)
    if case.dead_letter_id is None:
        assert verdict.task_id is None  # quarantined
    elif case.dead_letter_id.endswith("*"):
        assert verdict.task_id is not None
        assert verdict.task_id.startswith(case.dead_letter_id[:-1])
        assert len(verdict.task_id) <= 255
        assert verdict.task_id.isprintable()
    else:
        assert verdict.task_id == case.dead_letter_id


def test_there_are_more_than_twenty_kinds_and_each_name_is_unique() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 20


def test_the_size_limit_counts_headers_and_salvages_the_id_without_decoding() -> None:
    message = kombu_message(QUEUE, "big-headers", [7], headers={"argsrepr": "x" * 70_000})
    verdict = refused(raw(message))
    assert (verdict.error_class, verdict.task_id) == ("MessageTooLarge", "big-headers")
    assert verdict.task_name == "tasks.posts.record_view"
    assert "headers included" in verdict.reason
    assert verdict.args == []  # never decoded


def test_a_bare_object_body_is_kept_as_keyword_arguments_for_a_retry() -> None:
    message = kombu_message(QUEUE, "object-body", body=encode_body({"post_id": 7}))
    verdict = refused(raw(message))
    assert (verdict.args, verdict.kwargs) == ([], {"post_id": 7})
    assert "body must be [args (array), kwargs (object), embed (object)]" in verdict.reason


def test_a_missing_id_gets_the_same_dead_letter_id_for_every_copy() -> None:
    first = refused(raw(kombu_message(QUEUE, None, [7])))
    copy = refused(raw(kombu_message(QUEUE, None, [7], headers={"origin": "elsewhere"})))
    other = refused(raw(kombu_message(QUEUE, None, [8])))
    assert first.task_id == copy.task_id != other.task_id
    assert (first.args, first.kwargs) == ([7], {})


def test_two_different_bad_ids_never_share_a_dead_letter() -> None:
    one = refused(raw(kombu_message(QUEUE, "a" * 300, [7])))
    two = refused(raw(kombu_message(QUEUE, "a" * 299 + "b", [7])))
    assert one.task_id != two.task_id


def test_an_eta_within_the_limit_is_accepted_and_one_beyond_names_the_limit() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    soon = (now + timedelta(seconds=3500)).isoformat()
    late = (now + timedelta(seconds=3600)).isoformat()
    assert isinstance(
        inspect(raw(kombu_message(QUEUE, "soon", [7], headers={"eta": soon})), LIMITS, now),
        Accepted,
    )
    verdict = inspect(raw(kombu_message(QUEUE, "late", [7], headers={"eta": late})), LIMITS, now)
    assert isinstance(verdict, Refused)
    assert verdict.error_class == "EtaTooFar"
    assert "the limit is 3510s" in verdict.reason
    assert late in verdict.reason


def test_a_naive_eta_is_read_as_utc() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    naive = (now + timedelta(days=1)).replace(tzinfo=None).isoformat()
    verdict = inspect(raw(kombu_message(QUEUE, "naive", [7], headers={"eta": naive})), LIMITS, now)
    assert isinstance(verdict, Refused)
    assert verdict.error_class == "EtaTooFar"


def test_arguments_too_large_to_keep_are_marked_not_kept_never_emptied() -> None:
    refuser = Refuser(queue=QUEUE, max_bytes=200, quarantine_max_entries=10)
    small = refused(raw(kombu_message(QUEUE, "small", body=encode_body({"post_id": 7}))))
    big = Refused("EtaTooFar", "eta too far", "sha256:0", 1, "big", "t", ["x" * 200], {})

    assert refuser.refusal_kwargs(small)[0]["kwargs"] == {"post_id": 7}
    kept, note = refuser.refusal_kwargs(big)
    assert (kept["args"], kept["kwargs"], kept["arguments_kept"]) == ([], {}, False)
    assert "too large to keep" in note
