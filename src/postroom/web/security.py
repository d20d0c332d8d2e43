"""Who may use the dashboard, and what every response carries.

* **Token.** With ``email.web.token`` set, every request but the login form and the style sheet
  needs it: as ``Authorization: Bearer <token>``, as ``X-Postroom-Token: <token>``, or through
  the session cookie the login form sets (an HMAC of the token, never the token itself).
  Without a token the dashboard only listens on loopback addresses, and answers only requests
  whose ``Host`` is a loopback name (a web page cannot reach it by DNS rebinding).
* **CSRF.** Every POST made with the cookie (or with no token at all) must carry the value of
  the ``postroom_csrf`` cookie, as the form field ``csrf_token`` or the ``X-CSRF-Token``
  header (double submit). A request that authenticates with a token header needs neither:
  browsers never add such a header to a cross-site request.
* **Headers.** Every response forbids framing by other sites, content sniffing and referrers;
  HTML pages get a Content Security Policy that allows no script at all.

The token never reaches a log line: it is not accepted in URLs, and nothing here logs it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "PAGE_CSP",
    "SESSION_COOKIE",
    "Access",
    "SecurityMiddleware",
    "csrf_ok",
    "is_loopback",
]

SESSION_COOKIE = "postroom_session"
CSRF_COOKIE = "postroom_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
TOKEN_HEADER = "x-postroom-token"
#: the dashboard's own pages: no script anywhere, styles from our own sheet, frames only ours
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
#: paths anyone may load: the login form and the style sheet
OPEN_PATHS = ("/login", "/static/")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host.strip("[]").lower() in {"localhost", "::1"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    """The access rules: the token (``""``: none, loopback only)."""

    token: str = ""

    def session_value(self) -> str:
        """What the session cookie holds: derived from the token, useless without it."""
        return hmac.new(self.token.encode(), b"postroom web session", hashlib.sha256).hexdigest()

    def token_in_header(self, request: Request) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = given or credentials.strip()
        return bool(self.token) and _same(given, self.token)

    def authenticated(self, request: Request) -> bool:
        if not self.token:
            return True
        if self.token_in_header(request):
            return True
        return _same(request.cookies.get(SESSION_COOKIE, ""), self.session_value())

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and _same(given, self.token)


def csrf_ok(request: Request, access: Access, submitted: str | None) -> bool:
    """Whether a POST is the dashboard's own (see the module docstring)."""
    if access.token_in_header(request):
        return True
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = submitted or request.headers.get(CSRF_HEADER, "")
    return bool(expected) and _same(given, expected)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class SecurityMiddleware:
    """Checks the Host and the token of every request; adds the security headers and the CSRF
    cookie to every response. ``request.state.csrf`` holds the CSRF value for the templates."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        scope.setdefault("state", {})["csrf"] = csrf
        set_cookie = CSRF_COOKIE not in request.cookies

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _security_headers(headers)
                if set_cookie:
                    headers.append(
                        "set-cookie", f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        if not self.access.token and not _loopback_host(request):
            return PlainTextResponse(
                "this dashboard answers only to localhost (set email.web.token to serve others)",
                status_code=421,
            )
        path = request.url.path
        if self.access.authenticated(request) or path == "/healthz" or path.startswith(OPEN_PATHS):
            return None
        if path.startswith(("/api/", "/metrics", "/readyz")):
            return JSONResponse({"error": "a valid token is required"}, status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def _loopback_host(request: Request) -> bool:
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in _LOOPBACK_NAMES or is_loopback(name)


def _security_headers(headers: MutableHeaders) -> None:
    headers.setdefault("x-content-type-options", "nosniff")
    headers.setdefault("referrer-policy", "no-referrer")
    headers.setdefault("x-frame-options", "SAMEORIGIN")
    headers.setdefault("cache-control", "no-store")
    if headers.get("content-type", "").startswith("text/html"):
        headers.setdefault("content-security-policy", PAGE_CSP)
