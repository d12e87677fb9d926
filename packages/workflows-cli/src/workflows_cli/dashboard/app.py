"""The dashboard as an ASGI application (Starlette): routes, and the layers every request goes
through (authentication, security headers, server timing, errors)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from workflows import errors
from workflows_cli.dashboard import views
from workflows_cli.dashboard.render import HERE
from workflows_cli.dashboard.security import authorized

log = logging.getLogger(__name__)

# Scripts and styles from this server only (no inline script can run even if some value
# escaped its escaping), no framing, no referrer leaking ids to other sites. Not
# `no-referrer`: under it Chromium sends `Origin: null` on the pages' own forms.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Options:
    read_only: bool = False
    # WORKFLOWS_DASHBOARD_TOKEN; None: no authentication (loopback only, see dashboard_cmd).
    token: str | None = None
    secure_cookie: bool = False


class Guard(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        if not authorized(request, request.app.state.options.token):
            response: Response = PlainTextResponse(
                "authentication required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="workflows", charset="UTF-8"'},
            )
        else:
            try:
                response = await call_next(request)
            except errors.WorkflowsError as exc:
                # The library's own errors say what went wrong without secrets.
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                response = views.problem(request, 503, "Unavailable", str(exc))
            except Exception:
                # A driver's message may name the server; the page says only that it failed.
                log.exception("%s %s failed", request.method, request.url.path)
                response = views.problem(
                    request, 500, "Failed", "The dashboard could not read the database just now."
                )
        response.headers.update(HEADERS)
        # The time spent at the server, for the benchmark and a browser's network panel.
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response


def create_app(options: Options | None = None) -> Starlette:
    routes = [
        Route("/", views.overview),
        Route("/healthz", views.healthz),
        Route("/executions", views.execution_list),
        Route("/executions/{execution_id}", views.execution),
        Route("/executions/{execution_id}/history.json", views.history_json),
        Route("/executions/{execution_id}/{action}", views.act, methods=["POST"]),
        Route("/queues/{queue}/{action}", views.queue_act, methods=["POST"]),
        Route("/schedules", views.schedule_list),
        # The name last, whole: a schedule's name may hold '/'.
        Route("/schedules/{action}/{schedule:path}", views.schedule_act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard)])
    app.state.options = options or Options()
    return app
