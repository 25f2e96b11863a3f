"""The import paths users depend on keep working, whatever folder the code behind them is in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from celery import Celery

from worker.development.live import PROJECT_ROOT
from worker.development.processes import run_cli


def test_the_worker_app_is_what_celery_dash_a_loads() -> None:
    from worker.app import app

    assert isinstance(app, Celery)
    # The worker's own hooks come with it: the gated transport and the last-resort consumer.
    assert app.conf.broker_transport == "worker.runtime.transport:Transport"
    assert app.conf.worker_consumer == "worker.runtime.consumer:Consumer"


def test_api_services_keep_their_imports() -> None:
    from worker.client import tasks, views
    from worker.db import SessionLocal, get_db, session_scope
    from worker.enqueue import after_commit
    from worker.models import Comment, Post, User
    from worker.outbox import in_outbox

    entry_points = [tasks.record_view, views.record_view, after_commit, in_outbox, get_db]
    assert all(map(callable, [*entry_points, session_scope, SessionLocal]))
    assert {model.__tablename__ for model in (User, Post, Comment)} == {
        "users",
        "posts",
        "comments",
    }


def test_task_modules_written_against_tasks_base_keep_working() -> None:
    from tasks.base import DatabaseTask
    from worker.runtime.task import DatabaseTask as RuntimeTask

    assert DatabaseTask is RuntimeTask


def test_the_pytest_plugin_is_registered_under_its_name() -> None:
    import worker.testing

    assert {"db_session", "db_engine", "eager_tasks", "fake_redis"} <= set(dir(worker.testing))


def test_python_dash_m_worker_lists_the_operator_commands() -> None:
    done = run_cli(os.environ, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("failures", "quarantine", "outbox", "db", "settings"):
        assert f"  {command}" in done.stdout


def test_a_celeryconfig_of_the_api_project_never_configures_the_worker_app(tmp_path: Path) -> None:
    # Given an API project with a celeryconfig.py of its own, first on sys.path
    (tmp_path / "celeryconfig.py").write_text('task_default_queue = "theirs"\ninclude = []\n')

    # When it imports the worker's app
    done = subprocess.run(
        [sys.executable, "-c", "from worker.app import app; print(app.conf.task_default_queue)"],
        cwd=tmp_path,
        env={**os.environ, "TASK_QUEUE": "views-q", "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    # Then the worker's own configuration is the one in force
    assert done.stdout.strip() == "views-q"
