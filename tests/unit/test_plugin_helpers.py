"""Pure helpers of the pytest plugin."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from worker.development.databases import as_runtime_role


def test_runtime_role_url_never_carries_the_owners_password() -> None:
    owner = make_url("postgresql+psycopg2://owner:owner-secret@127.0.0.1:5432/app")
    runtime = as_runtime_role(owner, "runtime")
    assert (runtime.username, runtime.password, runtime.database) == ("runtime", None, "app")
    assert "owner-secret" not in runtime.render_as_string(hide_password=False)
