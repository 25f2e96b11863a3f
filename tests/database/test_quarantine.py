"""The quarantine of raw messages with no id: capped, never silently, read and purged by CLI."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
import redis

from worker.development.processes import run_cli
from worker.runtime import quarantine
from worker.runtime.envelope import digest


def keep(redis_client: redis.Redis, queue: str, raw: bytes, max_entries: int = 100) -> int:
    return quarantine.add(
        redis_client,
        queue,
        raw=raw,
        digest=digest(raw),
        reason="envelope is not JSON",
        error_class="MalformedMessage",
        max_entries=max_entries,
        max_bytes=16,
    )


def cli(live_redis_url: str, queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": live_redis_url, "TASK_QUEUE": queue}
    return run_cli(env, "quarantine", *args, timeout=60)


def test_a_full_quarantine_drops_its_oldest_entries_with_a_warning_each(
    redis_client: redis.Redis, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.runtime.quarantine")
    messages = [f"garbage {i}".encode() for i in range(12)]

    dropped = sum(keep(redis_client, queue, raw, max_entries=10) for raw in messages)

    assert dropped == 2
    assert quarantine.count(redis_client, queue) == 10
    newest_first = [entry.raw for entry in quarantine.entries(redis_client, queue)]
    assert newest_first == messages[:1:-1]
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 2
    assert digest(messages[0]) in warned[0]
    assert digest(messages[1]) in warned[1]


def test_a_message_larger_than_the_limit_is_kept_cut_and_says_so(
    redis_client: redis.Redis, queue: str
) -> None:
    raw = b"x" * 40
    keep(redis_client, queue, raw)
    (entry,) = quarantine.entries(redis_client, queue)
    assert (entry.raw, entry.size, entry.truncated) == (b"x" * 16, 40, True)


def test_operators_list_show_and_purge_with_the_cli(
    redis_client: redis.Redis, queue: str, live_redis_url: str
) -> None:
    # Given three quarantined messages
    raws = [b"not json at all", b"[1, 2, 3]", b"\xff\xfe"]
    for raw in raws:
        keep(redis_client, queue, raw)

    # When an operator lists them, shows one as raw bytes, purges one by prefix, then the rest
    listed = cli(live_redis_url, queue, "list")
    shown = cli(live_redis_url, queue, "show", digest(raws[2])[:14], "--raw")
    purged = cli(live_redis_url, queue, "purge", digest(raws[0]))
    after_one = quarantine.count(redis_client, queue)
    missing = cli(live_redis_url, queue, "purge", "sha256:0000")
    everything = cli(live_redis_url, queue, "purge", "--all")

    # Then each did what it says, and a digest that matches nothing is an error
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [digest(raw) for raw in reversed(raws)]
    assert lines[-1] == "3 of 3 quarantined messages shown"
    assert shown.returncode == 0
    assert shown.stdout.encode(errors="surrogateescape") == raws[2]
    assert purged.stdout == "purged 1 quarantined message\n"
    assert after_one == 2
    assert missing.returncode == 1
    assert "no quarantined message with digest" in missing.stderr
    assert everything.stdout == "purged 2 quarantined messages\n"
    assert quarantine.count(redis_client, queue) == 0
