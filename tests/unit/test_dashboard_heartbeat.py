"""Workers online from their heartbeats (worker.operations.heartbeat), on fakeredis."""

from __future__ import annotations

import time
from typing import Any

from worker.operations import heartbeat


def beat(node: str, seen: float, busy: int = 0) -> heartbeat.Beat:
    return heartbeat.Beat(node, 100, ("q",), 6, busy, 9540, seen - 600, seen)


def test_nodes_seen_within_the_ttl_are_online(fake_redis: Any) -> None:
    now = time.time()
    heartbeat.publish(fake_redis, "q", beat("b@host", now, busy=2))
    heartbeat.publish(fake_redis, "q", beat("a@host", now - 1))
    heartbeat.publish(fake_redis, "other", beat("c@host", now))

    online = heartbeat.online(fake_redis, "q", now)

    assert [(each.node, each.busy, each.children) for each in online] == [
        ("a@host", 0, 6),
        ("b@host", 2, 6),
    ]
    assert online[0].queues == ("q",)


def test_a_node_that_stopped_beating_leaves_the_list(fake_redis: Any) -> None:
    now = time.time()
    heartbeat.publish(fake_redis, "q", beat("gone@host", now - heartbeat.TTL - 1))
    heartbeat.publish(fake_redis, "q", beat("here@host", now))

    assert [each.node for each in heartbeat.online(fake_redis, "q", now)] == ["here@host"]
    # and the newer beat swept the old node out of the set
    assert fake_redis.zrange(heartbeat.nodes_key("q"), 0, -1) == [b"here@host"]
    assert fake_redis.ttl(heartbeat.beat_key("q", "here@host")) == int(heartbeat.TTL)


def test_a_node_shutting_down_is_forgotten_at_once(fake_redis: Any) -> None:
    now = time.time()
    heartbeat.publish(fake_redis, "q", beat("a@host", now))

    heartbeat.forget(fake_redis, "q", "a@host")

    assert heartbeat.online(fake_redis, "q", now) == []


def test_the_thread_beats_until_stopped_then_forgets(fake_redis: Any) -> None:
    thread = heartbeat.Heartbeat(fake_redis, "q", lambda: beat("t@host", time.time()))
    thread.start()
    deadline = time.monotonic() + 10
    while not heartbeat.online(fake_redis, "q") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [each.node for each in heartbeat.online(fake_redis, "q")] == ["t@host"]

    thread.stopping.set()
    thread.join(10)

    assert not thread.is_alive()
    assert heartbeat.online(fake_redis, "q") == []
