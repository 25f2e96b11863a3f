"""Engine per process and the session scope's commit / rollback / close rules."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from worker import db
from worker.models import Post


def test_one_engine_per_process_and_a_new_one_after_fork(db_engine: Engine) -> None:
    assert db.get_engine() is db.get_engine()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's engine or its pool
        try:
            engine = db.get_engine()
            ok = engine is not db_engine and engine is db.get_engine()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert os.waitstatus_to_exitcode(status) == 0


def test_session_scope_commits_on_success(
    db_connection: object, make_post: Callable[..., Post]
) -> None:
    post = make_post()
    with db.session_scope() as session:
        session.execute(Post.__table__.update().values(view_count=7).where(Post.id == post.id))
    with db.session_scope() as session:
        assert session.scalar(select(Post.view_count).where(Post.id == post.id)) == 7


def test_session_scope_rolls_back_on_error_and_closes(make_post: Callable[..., Post]) -> None:
    post = make_post()
    seen: list[Session] = []

    def fail_halfway() -> None:
        with db.session_scope() as session:
            seen.append(session)
            session.execute(Post.__table__.update().values(view_count=99).where(Post.id == post.id))
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        fail_halfway()
    assert not seen[0].in_transaction()
    with db.session_scope() as session:
        assert session.scalar(select(Post.view_count).where(Post.id == post.id)) == 0


def test_get_db_dependency_commits_and_rolls_back(make_post: Callable[..., Post]) -> None:
    post = make_post()
    dependency = db.get_db()
    session = next(dependency)
    session.execute(Post.__table__.update().values(view_count=3).where(Post.id == post.id))
    with pytest.raises(StopIteration):
        next(dependency)

    failing = db.get_db()
    session = next(failing)
    session.execute(Post.__table__.update().values(view_count=50).where(Post.id == post.id))
    with pytest.raises(ValueError, match="bad request"):
        failing.throw(ValueError("bad request"))
    with db.session_scope() as check:
        assert check.scalar(select(Post.view_count).where(Post.id == post.id)) == 3
