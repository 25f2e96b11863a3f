"""The `worker` plugin in an API team's own suite: its fixture names, its `tasks.py`, its extras.

Each test writes a throwaway suite the way an API project lays one out and runs it with
`python -m pytest` in a subprocess, so the suite's directory is first on `sys.path`.
"""

from __future__ import annotations

import tomllib

import pytest
from celery import Celery
from packaging.requirements import Requirement
from sqlalchemy.orm import Session

from worker.development.live import PROJECT_ROOT

pytest_plugins = ["pytester"]

# Given a post written through the worker's session, when the API enqueues views with the typed
# client under eager tasks, then the worker's session sees them counted.
RECORD_VIEWS = """
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.client import tasks as worker_tasks
from worker.models import Post, User


def record_views(session: Session, times: int) -> int:
    author = User(email="author@example.test", name="Author", password_hash="not-a-hash")
    session.add(author)
    session.flush()
    post = Post(title="Hello", body="body", slug="hello", author_id=author.id)
    session.add(post)
    session.flush()
    for _ in range(times):
        worker_tasks.record_view(post.id)
    return session.scalar(select(Post.view_count).where(Post.id == post.id))
"""

THEIR_TASKS_MODULE = '''
"""The API project's own background jobs, nothing to do with the worker."""


def send_welcome_email(user_id: int) -> str:
    return f"welcome {user_id}"
'''


def test_short_names_are_the_worker_fixtures_so_a_suite_may_mix_them(
    db_session: Session,
    worker_db_session: Session,
    eager_tasks: Celery,
    worker_eager_tasks: Celery,
) -> None:
    assert db_session is worker_db_session
    assert eager_tasks is worker_eager_tasks


@pytest.mark.usefixtures("worker_db_template")
def test_suite_with_its_own_db_session_keeps_it_and_still_gets_the_workers(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(record=RECORD_VIEWS)
    pytester.makeconftest(
        """
        import pytest


        class TheirSession:
            def __init__(self, engine):
                self.engine = engine


        @pytest.fixture
        def db_engine():
            return "their engine"


        @pytest.fixture
        def db_session(db_engine):
            return TheirSession(db_engine)
        """
    )
    pytester.makepyfile(
        test_api="""
        from record import record_views


        def test_their_own_fixtures_are_theirs(db_session, db_engine):
            assert type(db_session).__name__ == "TheirSession"
            assert db_session.engine == db_engine == "their engine"


        def test_worker_fixtures_beside_theirs(db_session, worker_db_session, worker_eager_tasks):
            assert record_views(worker_db_session, times=3) == 3
            assert db_session.engine == "their engine"
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


@pytest.mark.usefixtures("worker_db_template")
@pytest.mark.parametrize(
    "their_tasks_imported",
    ["by their conftest, before the worker's", "by a test, after the worker's"],
)
def test_suite_with_its_own_tasks_module_runs_the_workers_tasks_eagerly(
    pytester: pytest.Pytester, their_tasks_imported: str
) -> None:
    pytester.makepyfile(tasks=THEIR_TASKS_MODULE, record=RECORD_VIEWS)
    if their_tasks_imported.startswith("by their conftest"):
        pytester.makeconftest("import tasks  # their app imports its jobs at import time\n")
    pytester.makepyfile(
        test_api="""
        from record import record_views


        def test_worker_tasks_run_eagerly(eager_tasks, db_session):
            assert record_views(db_session, times=2) == 2


        def test_their_tasks_module_is_still_theirs():
            import tasks

            assert tasks.send_welcome_email(7) == "welcome 7"
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def test_fake_redis_without_fakeredis_names_the_extra_to_install(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import sys

        sys.modules["fakeredis"] = None  # as if the testing extra were not installed
        """
    )
    pytester.makepyfile(
        test_api="""
        def test_buffer(fake_redis):
            fake_redis.set("key", "value")
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    assert "pip install 'platform-worker[testing]'" in result.stdout.str()


def test_testing_extra_brings_what_the_plugin_needs() -> None:
    pyproject = PROJECT_ROOT / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert {Requirement(line).name for line in extras["testing"]} >= {"pytest", "fakeredis"}
