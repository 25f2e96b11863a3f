"""Dead letters an operator retries with `python -m worker failures retry`, applied once by a live
worker. The rules of the command itself are tested in tests/database/failures_retry/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import Engine, text

from tests.envelopes import kombu_message, raw
from tests.steps import (
    RECORD_VIEW,
    add_posts,
    failure,
    failures,
    owner_env,
    processed_ids,
    views,
)
from worker.config import get_settings
from worker.development.live import LiveStack, wait_until
from worker.development.processes import run_cli


def test_retried_dead_letters_are_applied_once_by_a_live_worker(
    live_stack: LiveStack, live_db: Engine
) -> None:
    # Given a live worker, a post, and a raw producer's view of it scheduled two hours ahead,
    # beyond what Redis's visibility timeout allows
    live_stack.start_worker(concurrency=1)
    far_post, created_late = add_posts(live_db, 2)
    eta = datetime.now(UTC) + timedelta(hours=2)
    queue = redis.Redis.from_url(live_stack.redis_url)
    queue.lpush(
        live_stack.queue,
        raw(kombu_message(live_stack.queue, "far", [far_post], headers={"eta": eta.isoformat()})),
    )
    # and a view of a post that does not exist yet
    with live_stack.producer() as client:
        live_stack.send(client, RECORD_VIEW, 777_777, task_id="too-early")

    # Then both are dead-lettered at once; the far one names its eta and the limit, unheld
    wait_until(lambda: len(failures(live_db)) == 2, 60, 0.1, "both dead letters")
    far = failure(live_db, "far")
    assert far is not None
    assert far["error_class"] == "EtaTooFar"
    assert eta.isoformat() in far["error_message"]
    assert f"the limit is {get_settings().max_task_delay_seconds}s" in far["error_message"]
    assert queue.llen(live_stack.queue) == 0
    queue.close()
    assert views(live_db, far_post) == 0

    # When the missing post is created, and an operator lists and retries both dead letters,
    # in the worker's environment but as the owner (the runtime role may not read them)
    with live_db.begin() as connection:
        connection.execute(
            text("UPDATE posts SET id = 777777 WHERE id = :id"), {"id": created_late}
        )

    as_owner = owner_env(live_stack, live_db)
    listed = run_cli(as_owner, "failures", "list")
    retried = run_cli(as_owner, "failures", "retry", "too-early", "far")

    # Then each is published now under a new id and applied once, and the dead letters are gone
    assert {"too-early", "far"} <= {line.split()[0] for line in listed.stdout.splitlines()}
    assert retried.returncode == 0, retried.stderr
    *requeued, summary = retried.stdout.splitlines()
    new_ids = {line.split()[1]: line.split()[-1] for line in requeued}
    assert requeued == [f"requeued {old} as {new}" for old, new in new_ids.items()]
    assert set(new_ids) == {"too-early", "far"}
    assert summary == "requeued 2, skipped 0 (already applied), refused 0"
    wait_until(
        lambda: views(live_db, 777_777) == 1 and views(live_db, far_post) == 1,
        60,
        0.1,
        "both requeued views",
    )
    # The original ids are claimed too, so a late delivery of either would be skipped
    assert processed_ids(live_db) == {"too-early", "far", *new_ids.values()}
    assert failures(live_db) == {}
    # And retrying again finds nothing to send
    assert run_cli(as_owner, "failures", "retry", "too-early").returncode == 1
