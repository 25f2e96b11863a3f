"""The dashboard's pages (GET), each with its JSON twin under `/api` reading the same figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session

from worker.contracts import CONTRACTS, PUBLIC_TASKS
from worker.operations import deadletters
from worker.operations.dashboard import queries
from worker.operations.dashboard.app import Dashboard, render, state
from worker.operations.dashboard.auth import CSRF_COOKIE

router = APIRouter()
Reader = Callable[[Request, Session, Dashboard], dict[str, Any]]


def twin(path: str, api_path: str, template: str) -> Callable[[Reader], Reader]:
    """Serve what `read` returns as `template` at `path` and as JSON at `api_path`."""

    def register(read: Reader) -> Reader:
        def figures(request: Request) -> dict[str, Any]:
            dashboard = state(request)
            with dashboard.scope() as session:
                return read(request, session, dashboard)

        def page(request: Request) -> Response:
            return render(request, template, figures(request))

        def api(request: Request) -> Response:
            return JSONResponse(jsonable_encoder(figures(request)))

        router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse)
        router.add_api_route(api_path, api, methods=["GET"])
        return read

    return register


def text_parameter(request: Request, name: str) -> str | None:
    """A query parameter; empty means not given."""
    return request.query_params.get(name) or None


def page_number(request: Request) -> int:
    raw = request.query_params.get("page") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise HTTPException(422, "page must be a whole number from 1")
    return int(raw)


@twin("/", "/api/overview", "overview.html")
def overview(request: Request, session: Session, dashboard: Dashboard) -> dict[str, Any]:
    figures = dashboard.broker.read()
    dead = deadletters.count_failures(session, cap=queries.COUNT_CAP)
    outbox = queries.outbox(session, limit=0).status
    return {
        "queues": figures.queues,
        "workers": figures.workers,
        "redis_error": figures.error,
        "throughput": queries.throughput(session),
        "dead_letters": {"count": dead, "capped": dead >= queries.COUNT_CAP},
        "outbox": outbox,
        "view_buffer": {"pending_views": figures.buffered_views},
    }


@twin("/dead-letters", "/api/dead-letters", "dead_letters.html")
def dead_letters(request: Request, session: Session, dashboard: Dashboard) -> dict[str, Any]:
    task, error = text_parameter(request, "task"), text_parameter(request, "error")
    page = queries.dead_letter_page(session, task=task, error=error, page=page_number(request))
    tasks, errors = queries.filter_choices(session)
    return {
        "dead_letters": page.rows,
        "page": page.page,
        "pages": page.pages,
        "has_next": page.has_next,
        "matching": page.matching,
        "matching_capped": page.matching_capped,
        "filter": {"task": task, "error": error},
        "task_names": tasks,
        "error_classes": errors,
    }


@twin("/dead-letters/{task_id}", "/api/dead-letters/{task_id}", "dead_letter.html")
def dead_letter(request: Request, session: Session, dashboard: Dashboard) -> dict[str, Any]:
    task_id = request.path_params["task_id"]
    row = deadletters.get_failure(session, task_id)
    if row is None:
        raise HTTPException(404, f"no dead letter with task id {task_id!r}")
    refused = deadletters.refusal(row)
    return {
        "dead_letter": queries.DeadLetter.of(row),
        # What `failures retry` would do with it: refuse it (and why), or send it as this id.
        "retry": {
            "refused": None if refused is None else refused[1],
            "requeue_id": None if refused else deadletters.requeue_id(row),
        },
    }


@twin("/outbox", "/api/outbox", "outbox.html")
def outbox(request: Request, session: Session, dashboard: Dashboard) -> dict[str, Any]:
    current = queries.outbox(session)
    return {"status": current.status, "oldest_pending": current.oldest}


_RULES = {"minimum": "from {}", "maximum": "to {}", "maxLength": "at most {} characters"}


def _argument(name: str, spec: dict[str, Any], required: bool) -> dict[str, Any]:
    rules = [rule.format(spec[key]) for key, rule in _RULES.items() if key in spec]
    if not required:
        rules.append(f"default {json.dumps(spec['default'])}" if "default" in spec else "optional")
    return {"name": name, "type": spec.get("type", "any"), "required": required, "rules": rules}


@twin("/tasks", "/api/tasks", "tasks.html")
def tasks(request: Request, session: Session, dashboard: Dashboard) -> dict[str, Any]:
    described = []
    # The tasks API services send first, then the worker's own.
    for name, contract in sorted(
        CONTRACTS.items(), key=lambda item: (item[0] not in PUBLIC_TASKS, item[0])
    ):
        schema = contract.model_json_schema()
        required = set(schema.get("required", []))
        arguments = [
            _argument(field, spec, field in required)
            for field, spec in schema.get("properties", {}).items()
        ]
        described.append({"name": name, "public": name in PUBLIC_TASKS, "arguments": arguments})
    return {"tasks": described, "queue": dashboard.settings.task_queue}


@router.get("/api/csrf")
def csrf(request: Request) -> dict[str, str]:
    """The token a script sends back in X-CSRF-Token, with the cookie this response sets."""
    return {"csrf_token": request.state.csrf_token, "cookie": CSRF_COOKIE}
