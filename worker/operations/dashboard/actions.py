"""The dashboard's actions, POST only and CSRF-checked: retry and purge dead letters, relay the
outbox. Each calls what the CLI calls (`worker.operations.deadletters`, `relay`), with the same
rules: a dead letter whose arguments would fail again is refused and kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from worker.operations import deadletters, relay
from worker.operations.dashboard.app import NOTICE_COOKIE, Dashboard, render, state
from worker.operations.dashboard.auth import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER

NOTICE_LINES = 10


async def checked(request: Request) -> Dashboard:
    """The dashboard, if this POST may act: not read-only, and its CSRF token is good."""
    dashboard = state(request)
    if dashboard.read_only:
        raise HTTPException(403, "read-only: this dashboard takes no actions (--read-only)")
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and "form" in request.headers.get("content-type", ""):
        value = (await request.form()).get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if not dashboard.csrf.accepts(request.cookies.get(CSRF_COOKIE), submitted):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
    return dashboard


router = APIRouter(dependencies=[Depends(checked)])


class Selection(BaseModel):
    """Which dead letters: these task ids, or every one matching the filter (none: all)."""

    task_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = []
    matching: bool = False
    task: str | None = None
    error: str | None = None
    confirm: bool = False

    def describe(self) -> str:
        if self.task_ids:
            return f"{len(self.task_ids)} selected"
        named = [
            f"task {self.task}" if self.task else "",
            f"error {self.error}" if self.error else "",
        ]
        return "every dead letter" + (
            " of " + " and ".join(n for n in named if n) if any(named) else ""
        )


@dataclass(frozen=True)
class Retried:
    outcomes: list[deadletters.RetryOutcome]
    stopped: str | None

    def lines(self) -> list[str]:
        shown = [outcome.describe() for outcome in self.outcomes[:NOTICE_LINES]]
        if len(self.outcomes) > NOTICE_LINES:
            shown.append(f"... and {len(self.outcomes) - NOTICE_LINES} more")
        if self.stopped:
            shown.append(f"stopped: {self.stopped}; its dead letter is kept")
        return [*shown, deadletters.summarize(self.outcomes)]


def _ids(dashboard: Dashboard, selection: Selection) -> list[str]:
    if selection.task_ids:
        return list(dict.fromkeys(selection.task_ids))
    if not selection.matching:
        raise HTTPException(400, "select dead letters, or choose all matching the filter")
    with dashboard.scope() as session:
        return deadletters.dead_letter_ids(
            session, task_name=selection.task, error_class=selection.error
        )


def retry(dashboard: Dashboard, selection: Selection) -> Retried:
    """Retry the selection one transaction a row, as `failures retry`; stop if the broker fails."""
    outcomes: list[deadletters.RetryOutcome] = []
    try:
        for outcome in deadletters.retry_each(
            dashboard.scope, _ids(dashboard, selection), dashboard.publish
        ):
            outcomes.append(outcome)
    except deadletters.PublishFailed as error:
        return Retried(outcomes, str(error))
    return Retried(outcomes, None)


def purge(dashboard: Dashboard, selection: Selection) -> int:
    """Delete the selection, as `failures purge`; only once confirmed."""
    if not selection.confirm:
        raise HTTPException(400, "purging needs confirm: a purged dead letter cannot come back")
    ids = selection.task_ids
    if not ids and not selection.matching:
        raise HTTPException(400, "select dead letters, or choose all matching the filter")
    with dashboard.scope() as session:
        if ids:
            return sum(deadletters.purge(session, task_id=task_id) for task_id in set(ids))
        return deadletters.purge(session, task_name=selection.task, error_class=selection.error)


def relay_now(dashboard: Dashboard) -> relay.RelayReport:
    """Relay what is pending once, as `outbox relay`."""
    return relay.relay(dashboard.relay_client, scope=dashboard.scope)


# Forms ------------------------------------------------------------------------------------------


def _form_selection(
    selected: Annotated[list[str], Form(alias="task_id")] = [],  # noqa: B006 - copied per call
    matching: Annotated[str, Form()] = "",
    task: Annotated[str, Form()] = "",
    error: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Selection:
    return Selection(
        task_ids=[each for each in selected if each],
        matching=bool(matching),
        task=task or None,
        error=error or None,
        confirm=confirm == "yes",
    )


FormSelection = Annotated[Selection, Depends(_form_selection)]


def _back(path: str, selection: Selection, lines: list[str]) -> Response:
    query = urlencode(
        {k: v for k, v in (("task", selection.task), ("error", selection.error)) if v}
    )
    response = RedirectResponse(path + (f"?{query}" if query else ""), status_code=303)
    response.set_cookie(
        NOTICE_COOKIE, quote("\n".join(lines)), max_age=60, httponly=True, samesite="strict"
    )
    return response


@router.post("/dead-letters/{task_id}/retry")
def retry_one_form(request: Request, task_id: str, selection: FormSelection) -> Response:
    result = retry(state(request), Selection(task_ids=[task_id]))
    return _back("/dead-letters", selection, result.lines())


@router.post("/dead-letters/retry")
def retry_form(request: Request, selection: FormSelection) -> Response:
    return _back("/dead-letters", selection, retry(state(request), selection).lines())


@router.post("/dead-letters/purge")
def purge_form(request: Request, selection: FormSelection) -> Response:
    if not selection.confirm:
        dashboard = state(request)
        count = len(set(selection.task_ids))
        if not count and selection.matching:
            with dashboard.scope() as session:
                count = deadletters.count_failures(
                    session, task_name=selection.task, error_class=selection.error
                )
        elif not count:
            raise HTTPException(400, "select dead letters, or choose all matching the filter")
        return render(request, "confirm_purge.html", {"selection": selection, "count": count})
    removed = purge(state(request), selection)
    return _back(
        "/dead-letters", selection, [f"purged {removed} dead letter{'s' * (removed != 1)}"]
    )


@router.post("/outbox/relay")
def relay_form(request: Request) -> Response:
    report = relay_now(state(request))
    lines = [f"published {report.sent}, dead-lettered {report.dead_lettered}"]
    if report.error:
        lines.append(f"rows stay pending, the broker failed: {report.error}")
    return _back("/outbox", Selection(), lines)


# JSON -------------------------------------------------------------------------------------------


def _retried(result: Retried) -> Response:
    body: dict[str, Any] = {
        "outcomes": [
            {
                "task_id": each.task_id,
                "outcome": each.outcome.value,
                "detail": each.detail,
                "new_task_id": each.new_task_id,
                "refusal": None if each.refusal is None else each.refusal.value,
            }
            for each in result.outcomes
        ],
        "summary": deadletters.summarize(result.outcomes),
        "stopped": result.stopped,
    }
    return JSONResponse(body, 503 if result.stopped else 200)


@router.post("/api/dead-letters/{task_id}/retry")
def retry_one_api(request: Request, task_id: str) -> Response:
    return _retried(retry(state(request), Selection(task_ids=[task_id])))


@router.post("/api/dead-letters/retry")
def retry_api(request: Request, selection: Selection) -> Response:
    return _retried(retry(state(request), selection))


@router.post("/api/dead-letters/purge")
def purge_api(request: Request, selection: Selection) -> dict[str, int]:
    return {"purged": purge(state(request), selection)}


@router.post("/api/outbox/relay")
def relay_api(request: Request) -> dict[str, Any]:
    report = relay_now(state(request))
    return {"published": report.sent, "dead_lettered": report.dead_lettered, "error": report.error}
