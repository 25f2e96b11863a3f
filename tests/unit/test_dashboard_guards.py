"""The dashboard's guards, with nothing running: where it may listen, basic auth, CSRF tokens,
the chart's escaping, and what `python -m worker dashboard` says before it serves anything."""

from __future__ import annotations

import base64
import sys

import pytest
from click.testing import CliRunner

from worker.operations.cli import main
from worker.operations.dashboard.auth import (
    CsrfTokens,
    bind_refusal,
    credentials_match,
    is_loopback,
)
from worker.operations.dashboard.charts import Series, stacked_bars


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_password(host: str) -> None:
    assert is_loopback(host)
    assert bind_refusal(host, has_password=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "dashboard.internal"])
def test_any_other_address_needs_a_password(host: str) -> None:
    refusal = bind_refusal(host, has_password=False)

    assert not is_loopback(host)
    assert refusal is not None
    assert f"refusing to listen on {host} without DASHBOARD_PASSWORD" in refusal
    assert bind_refusal(host, has_password=True) is None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_takes_exactly_the_user_and_password() -> None:
    assert credentials_match(basic("ops", "pa:ss"), "ops", "pa:ss")
    assert not credentials_match(basic("ops", "pa:s"), "ops", "pa:ss")
    assert not credentials_match(basic("Ops", "pa:ss"), "ops", "pa:ss")
    assert not credentials_match(basic("ops", ""), "ops", "pa:ss")
    for header in (None, "", "Bearer x", "Basic", "Basic !!!", "Basic " + "b3Bz"):
        assert not credentials_match(header, "ops", "pa:ss"), header


def test_a_csrf_token_is_accepted_only_signed_here_and_equal_to_the_cookie() -> None:
    tokens = CsrfTokens()
    token = tokens.issue()
    nonce, _, signature = token.partition(".")

    assert tokens.accepts(token, token)
    assert not tokens.accepts(token, None)
    assert not tokens.accepts(None, token)
    assert not tokens.accepts(token, tokens.issue())  # signed here, but another one
    assert not tokens.accepts(f"{nonce}.{'0' * 64}", f"{nonce}.{'0' * 64}")  # forged
    assert not CsrfTokens().accepts(token, token)  # another process (a restart)
    assert not tokens.valid(nonce)
    assert len(signature) == 64


def test_the_chart_escapes_its_labels() -> None:
    chart = stacked_bars(["<b>", "12:01"], [Series("<i>", "a", [3, 0]), Series("x", "b", [1, 2])])

    assert "<b>" not in chart
    assert "<i>" not in chart
    assert "&lt;b&gt;: 3 &lt;i&gt;, 1 x" in chart
    assert chart.count("<rect") == 2 + 3  # a slot per bar, a rect per value above 0


def test_the_command_refuses_a_public_address_without_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)

    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"])

    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "refusing to listen on 0.0.0.0 without DASHBOARD_PASSWORD: set it (HTTP basic auth as "
        "DASHBOARD_USER), or listen on 127.0.0.1 and reach it through a tunnel"
    ]


@pytest.mark.parametrize(
    ("hidden", "package"),
    [
        (["uvicorn"], "uvicorn"),
        (["jinja2"], "jinja2"),
        (["python_multipart", "multipart"], "python-multipart"),
    ],
)
def test_the_command_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, hidden: list[str], package: str
) -> None:
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed

    result = CliRunner().invoke(main, ["dashboard"])

    assert result.exit_code == 1
    assert result.output == f"Error: the dashboard needs {package}: pip install -e '.[dashboard]'\n"
