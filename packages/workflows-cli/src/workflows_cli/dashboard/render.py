"""Templates and the filters they use. Autoescaping is on for every template: a value from the
database (arguments, results, errors, names, payloads) is text on the page, never markup."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from workflows.codec import wrapped_scheme
from workflows_cli.dashboard.security import CSRF_COOKIE, csrf_token
from workflows_cli.render import duration

HERE = Path(__file__).parent
ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def pretty(value: Any) -> str:
    """JSON as text, indented (escaped by the template like any other text); a payload this
    process's codec cannot unwrap (no key) as ``<encrypted: scheme>``."""
    scheme = wrapped_scheme(value)
    if scheme is not None:
        return f"<encrypted: {scheme}>"
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def short_id(value: Any) -> str:
    text = str(value or "")
    return text[:8] if len(text) > 8 else text


def when(value: Any) -> str:
    """An ISO timestamp as UTC to the second, the form the CLI prints."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        return str(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: Any) -> str:
    """A duration as the CLI's tables show it (0.25s, 42s, 3m05s, 2h03m, 4d02h)."""
    return "-" if value is None else (duration(float(value)) or "-")


ENV.filters.update(pretty=pretty, short_id=short_id, when=when, seconds=seconds)


def page(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``template`` rendered with what every page needs (the CSRF token, read-only mode)."""
    options = request.app.state.options
    token = csrf_token(request)
    html = ENV.get_template(template).render(
        request=request,
        csrf=token,
        read_only=options.read_only,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=options.secure_cookie
        )
    return response
