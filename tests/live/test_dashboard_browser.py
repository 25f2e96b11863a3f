"""An operator at the dashboard in a real browser: Debian's chromium, driven by Playwright,
against `python -m worker dashboard` and a live worker. The routes one by one, without a
browser: tests/database/dashboard/."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from tests.conftest import unavailable
from tests.steps import RECORD_VIEW, add_posts, failures, processed_ids, views
from worker.contracts import DEACTIVATE_USER
from worker.development.live import LiveStack, start_process, wait_until
from worker.development.processes import free_port, port_in_use

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # the dev extra brings it
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed: pip install -e '.[dev]'", allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it where missing
PASSWORD = "correct horse battery staple"
SLOW = 30_000  # ms: a loaded two-core box
MISSING = {"missing-1": 880_001, "missing-2": 880_002, "missing-3": 880_003}
ATTACK = "<script>window.owned = 1; document.title = 'owned'</script>"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not CHROMIUM.is_file():
        unavailable(f"no chromium at {CHROMIUM}: apt-get install chromium")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL: pages are opened by full address. Replaces pytest-base-url's, a method
    fixture that pytest 9 warns about (and this suite makes warnings errors)."""


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_context_args,
        "viewport": {"width": 1280, "height": 800},
        "http_credentials": {"username": "operator", "password": PASSWORD},
    }


@pytest.fixture
def dashboard(live_stack: LiveStack, live_db: Engine, tmp_path: Path) -> Iterator[str]:
    """`python -m worker dashboard` on the live stack's queue, as the owner, with a password."""
    port = free_port()
    env = {
        **live_stack.env,
        "DATABASE_URL": live_db.url.render_as_string(hide_password=False),
        "DASHBOARD_PASSWORD": PASSWORD,
    }
    command = [sys.executable, "-m", "worker", "dashboard", "--port", str(port)]
    process = start_process("dashboard", command, env, tmp_path)
    try:
        wait_until(
            lambda: process.check_alive() or port_in_use(port), 60, 0.1, "the dashboard to listen"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop(10)


def test_an_operator_retries_a_dead_letter_in_the_browser(
    live_stack: LiveStack, live_db: Engine, dashboard: str, page: Page, browser: Browser
) -> None:
    # Given a live worker that dead-letters three views of posts that do not exist, and a
    # deactivate_user whose argument is a script
    worker = live_stack.start_worker(concurrency=1)
    with live_stack.producer() as client:
        for task_id, post_id in MISSING.items():
            live_stack.send(client, RECORD_VIEW, post_id, task_id=task_id)
        live_stack.send(client, DEACTIVATE_USER, ATTACK, task_id="xss")
    wait_until(lambda: len(failures(live_db)) == 4, 60, 0.1, "four dead letters")
    # and the post of one of them, created since
    (post,) = add_posts(live_db, 1)
    with live_db.begin() as connection:
        connection.execute(text("UPDATE posts SET id = :new WHERE id = :id"), {
            "new": MISSING["missing-2"], "id": post,
        })  # fmt: skip

    # When the operator opens the dashboard, sees the worker online, filters the dead
    # letters by task and opens that one
    page.goto(dashboard + "/")
    expect(page.get_by_text(worker.node)).to_be_visible(timeout=SLOW)
    page.get_by_role("link", name="4 dead letters").click()
    page.get_by_label("task").select_option(RECORD_VIEW)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.letters tbody tr")
    expect(rows).to_have_count(3, timeout=SLOW)
    expect(page.get_by_text("xss")).to_have_count(0)
    page.get_by_role("link", name="missing-2").click()
    expect(page.get_by_role("heading", name="Dead letter missing-2")).to_be_visible()
    expect(page.locator("dd pre").first).to_have_text("[880002]")

    # and retries it
    page.get_by_role("button", name="Retry", exact=True).click()

    # Then it leaves the list, which keeps its filter, and says what was done
    expect(page).to_have_url(re.compile(r"/dead-letters\?task=tasks\.posts\.record_view$"))
    expect(page.get_by_role("status")).to_contain_text("requeued missing-2 as ", timeout=SLOW)
    expect(rows).to_have_count(2)
    expect(page.get_by_role("link", name="missing-2")).to_have_count(0)
    # and the view is applied exactly once in PostgreSQL
    wait_until(lambda: views(live_db, MISSING["missing-2"]) == 1, 60, 0.1, "the requeued view")
    queue = redis.Redis.from_url(live_stack.redis_url)
    wait_until(lambda: queue.llen(live_stack.queue) == 0, 30, 0.1, "an empty queue")
    queue.close()
    assert views(live_db, MISSING["missing-2"]) == 1
    requeued = processed_ids(live_db) - {"missing-2"}
    assert len(requeued) == 1  # the original id is claimed too: a late copy of it is skipped
    assert "missing-2" in processed_ids(live_db)
    assert set(failures(live_db)) == {"missing-1", "missing-3", "xss"}

    # And the script argument is shown as text, never run
    page.goto(dashboard + "/dead-letters/xss")
    expect(page.locator("dd pre").first).to_have_text(f'["{ATTACK}"]')
    assert page.title() == "Dead letter xss · worker dashboard"
    assert page.evaluate("typeof window.owned") == "undefined"
    page.goto(dashboard + "/dead-letters")
    expect(page.get_by_role("link", name="xss")).to_be_visible()
    assert page.evaluate("typeof window.owned") == "undefined"

    # And a POST without the CSRF token is refused, and nothing is retried
    refused = page.request.post(
        dashboard + "/dead-letters/missing-1/retry", form={"task": RECORD_VIEW}
    )
    assert refused.status == 403
    assert "missing-1" in failures(live_db)

    # And a wrong password gets 401
    stranger = browser.new_context(http_credentials={"username": "operator", "password": "x"})
    try:
        answer = stranger.new_page().goto(dashboard + "/dead-letters")
        assert answer is not None
        assert answer.status == 401
    finally:
        stranger.close()
