"""The counters stay exact while pool children are SIGKILLed and replaced: they live in the main
process, which receives every run's end.

The equation, per message: each of the N messages sent ends exactly once, as succeeded or
duplicate (nothing here retries, fails or dies three times: dead_lettered = poison = 0). A run
whose child is SIGKILLed ends as lost instead, and its message comes back (acks_late with
reject_on_worker_lost) to run again, so every lost run is one more delivery:

    deliveries        = N + lost = succeeded + duplicate + lost
    applied views     = rows of record_view in processed_tasks = distinct task ids U
    succeeded         = U - K
    duplicate         = (N - U) + K

where K is the number of lost runs that had committed their view before their child died: the
main process never heard of that success (the run counts as lost), and the redelivered copy
finds the id applied (a duplicate). K = applied - succeeded is read from the database, and must
lie between 0 and lost; lost itself equals the lines the main process logged for runs that
died: WorkerLostError, or TimeLimitExceeded for a run the pool lost track of amid the kills and
replacements (seen once in twenty runs: the job never ran, sat until the hard time limit, 90 s,
and was then redelivered and applied like any lost run).
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from tests.live.metrics_scrape import metrics_worker, outcomes, scrape, value
from tests.steps import RECORD_VIEW, add_posts, scalar, total_views
from worker.development.live import LiveStack, LiveWorker, wait_until

MESSAGES = 10_000
RESENT_EVERY = 20  # every 20th message re-sends an id sent a moment before: 500 duplicates
KILLS = 8


def test_counters_equal_the_database_while_children_are_killed_and_replaced(
    live_stack: LiveStack, live_db: Engine, figure: Callable[[str], None]
) -> None:
    # Given 20 posts and a worker of 4 children, each replaced after 50 tasks
    posts = add_posts(live_db, 20)
    worker, port = metrics_worker(
        live_stack, concurrency=4, extra_args=["--max-tasks-per-child", "50"]
    )

    # When 10,000 record_view messages are sent, 500 of them with an id sent just before
    ids = []
    for i in range(MESSAGES):
        resend = i % RESENT_EVERY == RESENT_EVERY - 1
        ids.append(ids[-1 - random.randrange(RESENT_EVERY - 1)] if resend else f"view-{i}")
    unique = len(set(ids))

    def publish() -> None:
        with live_stack.producer() as client:
            for i, task_id in enumerate(ids):
                live_stack.send(client, RECORD_VIEW, posts[i % len(posts)], task_id=task_id)

    publisher = threading.Thread(target=publish, name="publish")
    publisher.start()

    # And a busy child is SIGKILLed each time another tenth of the views is applied
    killed = []
    for step in range(1, KILLS + 1):
        target = step * unique // (KILLS + 2)
        wait_until(lambda t=target: total_views(live_db) >= t, 300, 0.02, f"{target} views")
        killed.append(kill_a_child(worker))
    publisher.join(300)

    def finished() -> dict[str, float] | None:
        found = outcomes(scrape(port), RECORD_VIEW)
        done = sum(n for outcome, n in found.items() if outcome != "lost")
        return found if done >= MESSAGES else None

    counted = wait_until(finished, 300, 0.5, f"{MESSAGES} messages counted")

    # Then every message ended once, and the counters agree with the database
    applied = total_views(live_db)
    rows = scalar(
        live_db, "SELECT count(*) FROM processed_tasks WHERE task_name = :name", name=RECORD_VIEW
    )
    succeeded, duplicate = counted.get("succeeded", 0), counted.get("duplicate", 0)
    lost = counted.get("lost", 0)
    after_commit = applied - succeeded  # K: lost runs whose view had committed
    died = re.findall(
        r"Task handler raised error: (WorkerLostError|TimeLimitExceeded)\(", worker.log()
    )
    figure(
        f"metrics under SIGKILL: {MESSAGES:,} messages ({unique:,} ids), {len(killed)} children "
        f"killed; succeeded {succeeded:,.0f} + duplicate {duplicate:,.0f} = {MESSAGES:,}; lost "
        f"{lost:.0f} (redelivered), of which {after_commit:.0f} had committed; views applied "
        f"{applied:,}; {died.count('TimeLimitExceeded')} lost run(s) found by the hard time limit"
    )
    assert set(counted) <= {"succeeded", "duplicate", "lost"}, counted
    assert applied == rows == unique
    assert succeeded + duplicate == MESSAGES
    assert 0 <= after_commit <= lost
    assert duplicate == (MESSAGES - unique) + after_commit
    assert lost == len(died)
    # And the children were replaced all along, the pool is whole again, and nothing waits
    samples = scrape(port)
    assert value(samples, "worker_children") == 4
    assert not set(killed) & worker.children()
    assert value(samples, "worker_task_duration_seconds_count", task=RECORD_VIEW) == MESSAGES


def kill_a_child(worker: LiveWorker) -> int:
    """SIGKILL a live pool child at random and return its pid. A child listed a moment ago may
    have exited on its own since (replaced after its 50 tasks): another is taken then."""

    def killed() -> int | None:
        children = sorted(worker.children())
        random.shuffle(children)
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                continue
            return child
        return None  # between generations: the replacements are being forked

    return wait_until(killed, 30, 0.05, "a live pool child to kill")
