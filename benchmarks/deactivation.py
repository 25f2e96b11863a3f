"""Bulk deactivation: the batched task vs one set-based UPDATE, on identical fresh copies."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text

from benchmarks.report import Row, median, number, progress
from benchmarks.stack import Databases, checkpoint, engine
from worker import db

SINGLE_UPDATE = text(
    "UPDATE users SET is_active = false, deactivated_at = now(), updated_at = now() "
    "WHERE is_active AND coalesce(last_seen_at, created_at) < now() - make_interval(days => 365)"
)


def populate(databases: Databases, users: int) -> str:
    """A template database of `users` users, every other one last seen 400 days ago."""
    url = databases.migrated("users_template")
    template = engine(url)
    with template.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, created_at, last_seen_at) "
                "SELECT 'user' || g || '@bench.test', 'User ' || g, 'x', "
                "  now() - interval '800 days', "
                "  now() - CASE WHEN g % 2 = 0 THEN interval '400 days' ELSE interval '3 days' END "
                "FROM generate_series(1, :n) g"
            ),
            {"n": users},
        )
    with template.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE users"))
    template.dispose()
    assert url.database is not None
    return url.database


def single_update(databases: Databases, template: str) -> tuple[float, int]:
    url = databases.create("users_single", template=template)
    checkpoint(url)
    target = engine(url)
    started = time.perf_counter()
    with target.begin() as connection:
        changed = connection.execute(SINGLE_UPDATE).rowcount
    elapsed = time.perf_counter() - started
    target.dispose()
    databases.drop(url)
    return elapsed, changed


def batched_task(databases: Databases, template: str) -> tuple[float, int]:
    """The real task, called in this process against its own copy (no time budget applies)."""
    import worker.app  # noqa: F401  (binds the shared tasks to the app)
    from tasks.users import deactivate_dormant_users

    url = databases.create("users_batched", template=template)
    checkpoint(url)
    target = create_engine(url, pool_size=1)
    with db.engine_installed(target):
        started = time.perf_counter()
        changed = deactivate_dormant_users(inactive_days=365)
        elapsed = time.perf_counter() - started
    target.dispose()
    databases.drop(url)
    return elapsed, changed


def bulk_deactivation(databases: Databases, users: int, runs: int) -> Row:
    template = populate(databases, users)
    ours, baseline = [], []
    for run in range(runs):
        seconds, changed = single_update(databases, template)
        baseline.append(seconds)
        if changed != users // 2:
            raise RuntimeError(f"single UPDATE changed {changed}, expected {users // 2}")
        seconds, changed = batched_task(databases, template)
        ours.append(seconds)
        if changed != users // 2:
            raise RuntimeError(f"batched task changed {changed}, expected {users // 2}")
        progress(f"deactivation run {run + 1}: batched {ours[-1]:.2f}s, single {baseline[-1]:.2f}s")
    ours_s, base_s = median(ours), median(baseline)
    ratio = ours_s / base_s
    dormant = users // 2
    return Row(
        scenario="bulk deactivation",
        ours=number(ours_s, "s"),
        baseline=number(base_s, "s"),
        ratio=ratio,
        target="<= 1.5x",
        passed=ratio <= 1.5,
        ours_rate=dormant / ours_s,
        baseline_rate=dormant / base_s,
        rate_unit="users/s",
        note=(
            f"{users:,} users, {dormant:,} dormant; deactivate_dormant_users (batches of "
            "DEACTIVATE_BATCH_SIZE, one transaction each) vs one set-based UPDATE, each on a "
            "fresh CREATE DATABASE ... TEMPLATE copy after a CHECKPOINT"
        ),
    )
