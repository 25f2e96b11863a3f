"""How fast the dashboard's pages are at 100,000 dead letters; with --screenshots, its pictures.

    python -m benchmarks.dashboard [--dead-letters 100000] [--requests 20] [--screenshots]

Seeds a throwaway database (dropped afterwards): the dead letters over 30 days, most recent
first, of four task names and five error classes; 50,000 tasks applied in the last hour;
200 outbox rows pending and 10,000 sent; then VACUUM ANALYZE, as autovacuum would. A live
worker (one child) on a private Redis sends its heartbeat and holds three messages due in ten
minutes. Every page and JSON twin is requested in this process through FastAPI's TestClient,
in interleaved rounds, and the median and p95 per page are printed. With --screenshots, the
app is served by uvicorn and chromium (Playwright, Debian's /usr/bin/chromium) saves each
page at 1280x800 to docs/images/.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from benchmarks.stack import bench
from worker import db
from worker.config import Settings
from worker.contracts import RECORD_VIEW
from worker.development.live import wait_until
from worker.development.processes import free_port
from worker.operations.dashboard.app import create_app

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"

# One in 20 by g % 20: mostly views of posts deleted meanwhile, then bad input and outages.
_SEED_DEAD_LETTERS = text("""
INSERT INTO task_failures (task_id, task_name, args, kwargs, error_class, error_message,
                           attempts, first_failed_at, last_failed_at, correlation_id)
SELECT 'dl-' || lpad(g::text, 7, '0'),
       CASE WHEN g % 20 < 16 THEN 'tasks.posts.record_view'
            WHEN g % 20 < 19 THEN 'tasks.users.deactivate_user'
            ELSE 'tasks.posts.delete_everything' END,
       CASE WHEN g % 20 = 14 THEN jsonb_build_array((g % 9000)::text)
            ELSE jsonb_build_array(1000000 + g) END,
       '{}'::jsonb,
       CASE WHEN g % 20 < 14 THEN 'NotFound' WHEN g % 20 < 16 THEN 'InvalidTaskArguments'
            WHEN g % 20 < 19 THEN 'OperationalError' ELSE 'NotRegistered' END,
       CASE WHEN g % 20 < 14 THEN 'post ' || (1000000 + g) || ' does not exist'
            WHEN g % 20 < 16 THEN 'tasks.posts.record_view: invalid arguments: post_id: '
                                  || 'Input should be a valid integer'
            WHEN g % 20 < 19 THEN 'could not connect to server: Connection refused'
            ELSE 'no task named ''tasks.posts.delete_everything'' in this worker' END,
       1 + (g % 20 >= 16 AND g % 20 < 19)::int * 5,
       now() - (g::float8 / :n) * interval '30 days' - interval '2 minutes',
       now() - (g::float8 / :n) * interval '30 days',
       'req-' || md5(g::text)
FROM generate_series(1, :n) AS g
""")
_SEED_LEDGER = text("""
INSERT INTO processed_tasks (task_id, task_name, finished_at)
SELECT 'done-' || g, CASE WHEN g % 50 = 0 THEN 'views.batch' ELSE 'tasks.posts.record_view' END,
       now() - interval '1 hour' * power(random(), 0.7)
FROM generate_series(1, 50000) AS g
""")
_SEED_OUTBOX = text("""
INSERT INTO task_outbox (task_id, task_name, args, created_at, sent_at, attempts, last_error)
SELECT 'out-' || g, 'tasks.posts.record_view', jsonb_build_array(g),
       now() - interval '1 second' * (10200 - g),
       CASE WHEN g <= 10000 THEN now() - interval '1 second' * (10200 - g) END,
       (g > 10000 AND g <= 10020)::int * 3,
       CASE WHEN g > 10000 AND g <= 10020
            THEN 'OperationalError: Error 111 connecting to redis:6379. Connection refused.' END
FROM generate_series(1, 10200) AS g
""")


def seed(url: URL, dead_letters: int) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(_SEED_DEAD_LETTERS, {"n": dead_letters})
        connection.execute(_SEED_LEDGER)
        connection.execute(_SEED_OUTBOX)
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def pages(engine: Engine) -> dict[str, str]:
    """Name -> path of every page and JSON twin, deep pages and filters included."""
    with engine.connect() as connection:
        detail = connection.scalar(
            text("SELECT task_id FROM task_failures WHERE error_class = 'NotFound' LIMIT 1")
        )
    paths = {
        "overview": "/",
        "dead letters": "/dead-letters",
        "by task": "/dead-letters?task=tasks.users.deactivate_user",
        "by error": "/dead-letters?error=InvalidTaskArguments",
        "by task and error": f"/dead-letters?task={RECORD_VIEW}&error=NotFound",
        "page 1,000": "/dead-letters?page=1000",
        "dead letter": f"/dead-letters/{detail}",
        "outbox": "/outbox",
        "tasks": "/tasks",
    }
    apis = {
        f"{name} (JSON)": "/api" + (path if path != "/" else "/overview")
        for name, path in paths.items()
    }
    return {**paths, **apis}


def measure(client: TestClient, paths: dict[str, str], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in paths}
    for path in paths.values():  # warm-up: templates, plans, connections
        assert client.get(path).status_code == 200, path
    for _ in range(rounds):
        for name, path in paths.items():
            started = time.perf_counter()
            answer = client.get(path)
            times[name].append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, path
    return times


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, by uvicorn in a thread."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, 0.05, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def screenshots(base: str, paths: dict[str, str], worker_node: str) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    shots = {
        "overview": "dashboard-overview.png",
        "dead letters": "dashboard-dead-letters.png",
        "dead letter": "dashboard-dead-letter.png",
        "outbox": "dashboard-outbox.png",
        "tasks": "dashboard-tasks.png",
    }
    IMAGES.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(base + "/")
        expect(page.get_by_text(worker_node)).to_be_visible(timeout=30_000)
        for name, file in shots.items():
            page.goto(base + paths[name])
            page.screenshot(path=IMAGES / file)
            saved.append(IMAGES / file)
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dead-letters", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20, help="requests per page")
    parser.add_argument("--screenshots", action="store_true", help=f"save PNGs to {IMAGES}")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp, bench(Path(tmp)) as run:
        url = run.databases.migrated("dashboard")
        seed(url, options.dead_letters)
        worker = run.start_worker(url, concurrency=1)
        for post in range(3):  # held by the worker until due: unacknowledged
            worker.producer.send_task(RECORD_VIEW, args=[post + 1], countdown=600)
        settings = Settings(
            database_url=SecretStr(url.render_as_string(hide_password=False)),
            redis_url=SecretStr(run.redis_url),
            task_queue=worker.queue,
        )
        engine = create_engine(url, pool_size=4)
        with db.engine_installed(engine):
            paths = pages(engine)
            with TestClient(create_app(settings)) as client:
                times = measure(client, paths, options.requests)
            print(
                f"dashboard at {options.dead_letters:,} dead letters, {options.requests} "
                "requests a page (TestClient, in process)"
            )
            print(f"{'page':<28}{'median ms':>11}{'p95 ms':>9}")
            for name, values in times.items():
                p95 = statistics.quantiles(values, n=20)[-1]
                print(f"{name:<28}{statistics.median(values):>11.1f}{p95:>9.1f}")
            if options.screenshots:
                with served(settings) as base:
                    for path in screenshots(base, paths, worker.node):
                        print(f"saved {path.relative_to(IMAGES.parents[1])}")
        engine.dispose()


if __name__ == "__main__":
    main()
