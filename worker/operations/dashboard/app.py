"""The dashboard's FastAPI app: `create_app(settings)`, its templates, auth and headers.

Pages and their JSON twins are in `pages`, the actions (POST only) in `actions`. The pages are
rendered on the server by Jinja2 with autoescaping on, so a task argument such as `<script>` is
shown as text; the Content-Security-Policy admits only the dashboard's own script and style.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.config import Settings
from worker.db import session_scope
from worker.operations.dashboard import charts
from worker.operations.dashboard.auth import CSRF_COOKIE, REALM, CsrfTokens, credentials_match
from worker.operations.dashboard.broker import Broker
from worker.operations.deadletters import Publisher
from worker.producer.client import TaskClient

HERE: Final = Path(__file__).resolve().parent
NOTICE_COOKIE: Final = "dashboard_notice"
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC: Final = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


@dataclass
class Dashboard:
    """What the routes share: settings, the way to publish and relay, the Redis reader."""

    settings: Settings
    read_only: bool
    publish: Publisher
    relay_client: TaskClient | None
    scope: Callable[[], AbstractContextManager[Session]]
    broker: Broker
    csrf: CsrfTokens = field(default_factory=CsrfTokens)


def state(request: Request) -> Dashboard:
    """The dashboard of the app serving `request`."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def celery_publisher(queue: str) -> Publisher:
    """Publish a requeued dead letter on `queue` as `failures retry` does: the worker's app."""
    from worker.celery_app import app

    def publish(name: str, args: list[Any], kwargs: dict[str, Any], new_id: str) -> None:
        app.send_task(name, args=args, kwargs=kwargs, task_id=new_id, queue=queue)

    return publish


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | float | None) -> str:
    if value is None:
        return "never"
    then = value.timestamp() if isinstance(value, datetime) else value
    return _age(datetime.now(UTC).timestamp() - then) + " ago"


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined
    )
    env.filters.update(
        age=_age,
        when=_when,
        ago=_ago,
        json=lambda value: json.dumps(value, ensure_ascii=False),
        number=lambda value: f"{value:,}",
    )
    env.globals["throughput_chart"] = charts.throughput_chart
    return Jinja2Templates(env=env)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """`template` with `context` and what every page shows: read-only or not, the CSRF token,
    the notice the last action left (then forgotten), the queue."""
    dashboard = state(request)
    notice = request.cookies.get(NOTICE_COOKIE)
    response = request.app.state.templates.TemplateResponse(
        request,
        template,
        {
            **context,
            "read_only": dashboard.read_only,
            "csrf_token": request.state.csrf_token,
            "notice": unquote(notice) if notice else None,
            "queue": dashboard.settings.task_queue,
            "path": request.url.path,
        },
        status_code=status,
    )
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response  # type: ignore[no-any-return]


def _guard(dashboard: Dashboard) -> Callable[..., Awaitable[Response]]:
    password = dashboard.settings.dashboard_password
    user = dashboard.settings.dashboard_user

    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if password is not None and not credentials_match(
            request.headers.get("Authorization"), user, password.get_secret_value()
        ):
            response: Response = JSONResponse(
                {"error": "authentication required"}, 401, {"WWW-Authenticate": REALM}
            )
        else:
            cookie = request.cookies.get(CSRF_COOKIE)
            fresh = not dashboard.csrf.valid(cookie)
            request.state.csrf_token = dashboard.csrf.issue() if fresh else cookie
            response = await call_next(request)
            if fresh:
                response.set_cookie(
                    CSRF_COOKIE, request.state.csrf_token, httponly=True, samesite="strict"
                )
        response.headers.update(HEADERS)
        return response

    return guard


def _errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or not hasattr(request.state, "csrf_token"):
            return JSONResponse({"error": error.detail}, error.status_code, error.headers)
        return render(request, "error.html", {"error": error.detail}, error.status_code)


def create_app(
    settings: Settings,
    *,
    read_only: bool = False,
    publish: Publisher | None = None,
    relay_client: TaskClient | None = None,
    scope: Callable[[], AbstractContextManager[Session]] = session_scope,
) -> FastAPI:
    """The dashboard for the workers of `settings.task_queue`.

    Reads and writes PostgreSQL through `scope` (the process's engine: run it as the owner,
    the runtime role may not read dead letters). `publish` requeues dead letters (default:
    the worker's Celery app on TASK_QUEUE, as `failures retry`); `relay_client` relays the
    outbox (default: the typed client's). With `read_only` the actions are hidden and refused.
    """
    from worker.operations.dashboard import actions, pages

    dashboard = Dashboard(
        settings=settings,
        read_only=read_only,
        publish=publish or celery_publisher(settings.task_queue),
        relay_client=relay_client,
        scope=scope,
        broker=Broker(settings),
    )
    app = FastAPI(title="worker dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = dashboard
    app.state.templates = _templates()
    app.middleware("http")(_guard(dashboard))
    _errors(app)
    app.include_router(pages.router)
    app.include_router(actions.router)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "not found")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

    return app


def session(request: Request) -> Iterator[Session]:
    """A session of the dashboard's scope, for one request (a read: it commits nothing)."""
    with state(request).scope() as current:
        yield current
