"""Who may see the dashboard and who may act through it.

* **Authentication.** With ``WORKFLOWS_DASHBOARD_TOKEN`` set, every request but ``/healthz``
  must carry the token: as the password of HTTP Basic credentials (any user name), which every
  browser asks for natively with no login page or session store to get wrong, or as
  ``Authorization: Bearer <token>`` for scripts. Basic credentials travel with every request,
  so anything but loopback belongs behind TLS (a reverse proxy). Binding to a non-loopback
  address without a token is refused at start (see ``dashboard_cmd``).
* **CSRF.** Actions are POSTs that carry a token equal to the ``workflows_csrf`` cookie
  (double submit; the cookie is ``SameSite=Strict`` and ``HttpOnly``), and a cross-origin
  ``Origin`` header is refused outright. A page of another site can neither read the cookie
  nor make the browser send it.
* **Read-only.** ``--read-only`` hides every action and refuses every POST.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    # Only for types: the command checks the address before the web stack is imported.
    from starlette.requests import Request

CSRF_COOKIE = "workflows_csrf"
CSRF_FIELD = "csrf"
# Reachable without credentials: a probe learns only that the process answers.
PUBLIC_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authorized(request: Request, token: str | None) -> bool:
    """Whether ``request`` may be served: always without a token, else only with it."""
    if token is None or request.url.path in PUBLIC_PATHS:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    given: str | None = None
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (set on the response)."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(existing) <= 100 and existing.isascii():
        return existing
    made: str | None = getattr(request.state, "new_csrf", None)
    if made is None:
        made = secrets.token_urlsafe(32)
        request.state.new_csrf = made
    return made


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Sent by every current browser on a cross-origin POST; absent: a same-origin form
        # of an older browser, or a script (which the token and cookie still gate).
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


def csrf_ok(request: Request, submitted: object) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(submitted, str) or not submitted:
        return False
    if not same_origin(request):
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), submitted.encode("utf-8"))
