"""`python -m benchmarks --smoke` runs end to end and prints a row for every scenario."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.report import SCENARIOS
from worker.development.processes import run_python


def test_smoke_bench_prints_and_saves_every_scenario(
    live_redis_url: str, db_template: object, tmp_path: Path
) -> None:
    # When the benchmark runs with tiny sizes (it starts its own workers and databases)
    run = run_python(os.environ, "-m", "benchmarks", "--smoke", "--out", str(tmp_path), timeout=600)

    # Then it succeeds and the table has a row for each scenario, with no failed scenario
    assert run.returncode == 0, run.stdout + run.stderr
    table = run.stdout.split("scenario", 1)[1]
    for scenario in SCENARIOS:
        assert f"\n{scenario} " in table, f"no row for {scenario!r}:\n{run.stdout}"
    assert " error " not in table
    saved = {path.name for path in tmp_path.iterdir()}
    assert saved == {"bench-smoke.txt", "bench-smoke.md", "bench-smoke.json", "bench-smoke.png"}
    assert all(scenario in (tmp_path / "bench-smoke.md").read_text() for scenario in SCENARIOS)
