"""Run one view flush or dormant-user run in this process, parking at a step to be SIGKILLed.

Usage: python -m tests.faults.crashing_run flush|deactivate STEP MARKER_FILE
STEP "none" runs to the end. Otherwise the process writes MARKER_FILE when it reaches STEP and
waits there for the test to kill it, so the kill lands at exactly that point. The tasks' log
records go to stderr with their level, for the test to read.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

FLUSH_STEPS = ("after_move_aside", "mid_apply", "after_commit")
DEACTIVATE_STEPS = ("after_batch_2",)


def park(marker: str) -> None:
    Path(marker).write_text("parked\n")
    while True:
        signal.pause()


def crash_flush_at(step: str, marker: str) -> None:
    from worker.producer import viewbuffer

    if step == "after_move_aside":
        move_aside = viewbuffer.move_aside

        def moved_then_park(*args: Any) -> list[str]:
            move_aside(*args)
            park(marker)
            raise AssertionError("unreachable")

        viewbuffer.move_aside = moved_then_park
    elif step == "mid_apply":
        # After the first chunk's UPDATE ran inside the still-open transaction.
        execute = Connection.exec_driver_sql

        def execute_then_park(self: Connection, statement: str, *args: Any, **kw: Any) -> Any:
            result = execute(self, statement, *args, **kw)
            if statement.startswith("UPDATE posts"):
                park(marker)
            return result

        Connection.exec_driver_sql = execute_then_park  # type: ignore[method-assign]
    elif step == "after_commit":
        viewbuffer.forget_batch = lambda *args: park(marker)


def crash_deactivate_at(step: str, marker: str) -> None:
    from worker.domain import users

    batch = users.deactivate_dormant_batch
    calls = 0

    def batch_then_park(*args: Any) -> users.Batch:
        nonlocal calls
        calls += 1
        if calls == 3:  # batches 1 and 2 are committed; the third is about to start
            park(marker)
        return batch(*args)

    users.deactivate_dormant_batch = batch_then_park


def main(what: str, step: str, marker: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import worker.app  # noqa: F401  (registers the tasks on the app)
    from tasks.posts import flush_view_counts
    from tasks.users import deactivate_dormant_users

    if what == "flush":
        if step != "none":
            crash_flush_at(step, marker)
        print(f"flushed {flush_view_counts()} views")
    else:
        if step != "none":
            crash_deactivate_at(step, marker)
        print(f"deactivated {deactivate_dormant_users(inactive_days=365)} users")


if __name__ == "__main__":
    main(*sys.argv[1:4])
