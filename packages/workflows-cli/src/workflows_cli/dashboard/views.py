"""The pages and the actions: each reads or changes the fleet through the same Python API as
the CLI (``workflows.queues``, ``workers``, ``executions``, ``schedules``, ``retry``,
``cancel``, ``send_signal``), so the dashboard adds no query of its own beyond three read-only
statements of ``fleet.sql`` (running executions, ends per minute, signals received)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

import workflows
from workflows import errors, executions, queues, schedules, workers
from workflows.config import Settings
from workflows.states import Kind, Status
from workflows.store import async_store
from workflows.testing import export_history
from workflows_cli.dashboard.render import page
from workflows_cli.dashboard.security import CSRF_FIELD, csrf_ok
from workflows_cli.dashboard.timeline import layout, sparkline

CHART_MINUTES = 15
PAGE_SIZE = 50
# Running executions shown on the overview, across the fleet.
RUNNING_SHOWN = 200
FINAL = ("completed", "failed", "cancelled")
# Messages after an action, by code: a query parameter never carries text onto the page.
DONE = {
    "retried": "Retried: the execution is pending again.",
    "cancelled": "Cancelled.",
    "cancelling": "Cancel requested: its worker is told to stop it.",
    "signalled": "Signal sent.",
    "paused": "Queue paused: nothing more starts from it.",
    "resumed": "Queue resumed.",
    "schedule-paused": "Schedule paused.",
    "schedule-resumed": "Schedule resumed.",
}
_FILTERS = ("queue", "status", "kind", "name", "since", "until")
_HEXISH = re.compile(r"[0-9a-fA-F-]{4,36}")


def fragment(request: Request) -> bool:
    """A live region asking for its new content only (see static/dashboard.js)."""
    return request.query_params.get("fragment") == "1"


def problem(request: Request, status: int, title: str, message: str) -> Response:
    return page(request, "message.html", {"title": title, "message": message}, status)


def _error_status(exc: errors.WorkflowsError) -> int:
    if isinstance(exc, LookupError):
        return 404
    if isinstance(exc, errors.ConfigurationError | errors.SerializationError):
        return 400
    return 409


# ---- overview ----------------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    stats = await queues.stats()
    series = await queues.throughput(CHART_MINUTES)
    fleet = await workers.list()
    running = await async_store(Settings.current()).control("fleet_running", (RUNNING_SHOWN,))
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for row in running:
        by_worker.setdefault(row["worker_id"] or "", []).append(row)
    zeros = [0] * CHART_MINUTES
    for q in stats:
        s = series.get(q["name"], {"completed": zeros, "failed": zeros})
        q["chart"] = sparkline(s["completed"], s["failed"])
        q["ended"] = sum(s["completed"]) + sum(s["failed"])
    context = {
        "queues": stats,
        "workers": fleet,
        "running": by_worker,
        "chart_minutes": CHART_MINUTES,
        "now": datetime.now(UTC).isoformat(),
        "done": DONE.get(request.query_params.get("done", "")),
    }
    return page(request, "overview_live.html" if fragment(request) else "overview.html", context)


# ---- executions --------------------------------------------------------------------------------


def _filters(request: Request) -> dict[str, str]:
    return {k: v for k in _FILTERS if (v := request.query_params.get(k, "").strip())}


async def execution_list(request: Request) -> Response:
    filters = _filters(request)
    search = request.query_params.get("q", "").strip()
    searched = None
    if search:
        found, searched = await _search(search)
        if found is not None:
            return RedirectResponse(f"/executions/{found}", status_code=303)
    after = request.query_params.get("after") or None
    listing: dict[str, Any] = {"executions": [], "next": None}
    error = None
    try:
        listing = await executions.list(**filters, after=after, limit=PAGE_SIZE)
    except errors.ConfigurationError as exc:
        error = str(exc)
    next_url = None
    if listing["next"]:
        next_url = "/executions?" + urlencode({**filters, "after": listing["next"]})
    context = {
        "filters": filters,
        "search": search,
        "searched": searched,
        "rows": listing["executions"],
        "scan_limit": executions.SCAN_LIMIT,
        "next_url": next_url,
        "first_url": "/executions?" + urlencode(filters) if after else None,
        "error": error,
        "statuses": [s.value for s in Status],
        "kinds": [k.value for k in Kind],
        "live_url": None
        if after
        else request.url.path + "?" + urlencode({**filters, "fragment": "1"}),
    }
    template = "executions_live.html" if fragment(request) else "executions.html"
    return page(request, template, context, 400 if error else 200)


async def _search(text: str) -> tuple[str | None, str]:
    """The id of the execution ``text`` names (an id, a unique prefix of one, or an
    idempotency key), or None and why not."""
    why = f"No execution has the id prefix or idempotency key “{text}”."
    if _HEXISH.fullmatch(text):
        try:
            return await executions.resolve(text), ""
        except errors.AmbiguousIdError as exc:
            why = f"{exc}: type more of the id."
        except (errors.ExecutionNotFoundError, errors.ConfigurationError):
            pass
    try:
        return await executions.by_key(text), why
    except errors.ConfigurationError:
        return None, why


async def execution(request: Request) -> Response:
    given = request.path_params["execution_id"]
    try:
        full = await executions.resolve(given)
    except errors.WorkflowsError as exc:
        return problem(request, _error_status(exc), "Execution not found", str(exc))
    if full != given:
        return RedirectResponse(f"/executions/{full}", status_code=303)
    history = await executions.history(full)
    status = history["execution"]
    timeline = layout(history) if status["kind"] == "workflow" else None
    context = {
        "e": status,
        "history": history,
        "timeline": timeline,
        "final": status["status"] in FINAL,
        "done": DONE.get(request.query_params.get("done", "")),
        "retryable": status["status"] in ("failed", "cancelled") and not status["parent_id"],
    }
    template = "execution_live.html" if fragment(request) else "execution.html"
    return page(request, template, context)


async def history_json(request: Request) -> Response:
    try:
        full = await executions.resolve(request.path_params["execution_id"])
    except errors.WorkflowsError as exc:
        return JSONResponse({"error": str(exc)}, status_code=_error_status(exc))
    # The document `workflows history export` writes, which `workflows replay` reads.
    body = await export_history(full)
    return Response(
        json.dumps(body, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="history-{full}.json"'},
    )


# ---- schedules ---------------------------------------------------------------------------------


async def schedule_list(request: Request) -> Response:
    context = {
        "schedules": await schedules.list(),
        "done": DONE.get(request.query_params.get("done", "")),
    }
    template = "schedules_live.html" if fragment(request) else "schedules.html"
    return page(request, template, context)


# ---- actions -----------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, Any] | Response:
    """The form of an action, or the response refusing it."""
    if request.app.state.options.read_only:
        return problem(
            request, 403, "Read-only", "This dashboard is read-only: it changes nothing."
        )
    form = await request.form()
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return problem(
            request, 403, "Refused", "The form's token is missing or stale: reload the page."
        )
    return dict(form)


async def act(request: Request) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    action = request.path_params["action"]
    execution_id = request.path_params["execution_id"]
    back = f"/executions/{execution_id}"
    try:
        if action == "retry":
            await workflows.retry(execution_id)
            done = "retried"
        elif action == "cancel":
            done = await workflows.cancel(execution_id)
        elif action == "signal":
            name = str(form.get("name", "")).strip()
            try:
                payload = json.loads(str(form.get("payload", "")) or "null")
            except ValueError as exc:
                return problem(request, 400, "Not JSON", f"The signal's payload is not JSON: {exc}")
            except RecursionError:
                return problem(request, 400, "Not JSON", "The signal's payload nests too deeply.")
            if not name:
                return problem(request, 400, "No name", "Give the signal a name.")
            await workflows.send_signal(execution_id, name, payload)
            done = "signalled"
        else:
            return problem(request, 404, "Unknown action", f"No action {errors.preview(action)}.")
    except errors.WorkflowsError as exc:
        return problem(request, _error_status(exc), "Not done", str(exc))
    return RedirectResponse(f"{back}?done={done}", status_code=303)


async def _pause_or_resume(
    request: Request, name: str, pause: Any, resume: Any, done: str
) -> Response:
    """The Pause/Resume buttons of a queue or a schedule (``pause``/``resume``: the API's)."""
    form = await _form(request)
    if isinstance(form, Response):
        return form
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        return problem(request, 404, "Unknown action", f"No action {errors.preview(action)}.")
    try:
        await (pause if action == "pause" else resume)(name)
    except errors.WorkflowsError as exc:
        return problem(request, _error_status(exc), "Not done", str(exc))
    return RedirectResponse(done.format(action=action), status_code=303)


async def queue_act(request: Request) -> Response:
    name = request.path_params["queue"]
    return await _pause_or_resume(request, name, queues.pause, queues.resume, "/?done={action}d")


async def schedule_act(request: Request) -> Response:
    name = request.path_params["schedule"]
    return await _pause_or_resume(
        request, name, schedules.pause, schedules.resume, "/schedules?done=schedule-{action}d"
    )


async def healthz(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")
