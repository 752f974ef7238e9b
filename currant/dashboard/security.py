"""Who may look and who may act: HTTP basic auth, CSRF tokens, response headers.

* Basic auth (``CURRANT_DASHBOARD_USER`` / ``CURRANT_DASHBOARD_PASSWORD``)
  guards every path, static files and the event stream included. The user and
  the password are both compared in constant time, always both.
* Every POST carries a CSRF token: an HMAC, under a secret of this process, of
  a random id kept in a ``SameSite=Strict``, ``HttpOnly`` cookie. A page of
  another site can neither read the token nor compute it. A POST whose
  ``Origin`` names another host is refused too.
* Every response says: no framing, no sniffing, scripts and styles only from
  this app (``Content-Security-Policy``), no referrer to other sites.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "currant_csrf"
CSRF_FIELD = "csrf"
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class BasicAuth:
    """ASGI middleware: every HTTP request needs the configured user and password."""

    def __init__(self, app: ASGIApp, user: str, password: str, realm: str = "currant") -> None:
        self.app = app
        self._user = user.encode()
        self._password = password.encode()
        self._realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(Headers(scope=scope).get("authorization")):
            response = PlainTextResponse(
                "authentication required\n",
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{self._realm}", charset="UTF-8"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def allowed(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both comparisons always run: how long this takes says nothing about which part was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in HEADERS if name not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Csrf:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def session_id(self, request: Request) -> str | None:
        value = request.cookies.get(CSRF_COOKIE)
        return value if value and len(value) <= 64 else None

    def token(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        return secrets.token_urlsafe(24)

    def set_cookie(self, response: Response, request: Request, session_id: str) -> None:
        response.set_cookie(
            CSRF_COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=_cookie_path(request),
        )

    def refusal(self, request: Request, submitted: str | None) -> str | None:
        """Why this POST is refused, or None if its token and origin are good."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return "the request came from another site"
        session_id = self.session_id(request)
        if session_id is None or not submitted:
            return "the form's security token is missing (reload the page and try again)"
        if not hmac.compare_digest(submitted.encode(), self.token(session_id).encode()):
            return "the form's security token is not valid (reload the page and try again)"
        return None


def _cookie_path(request: Request) -> str:
    root = str(request.scope.get("root_path") or "")
    return root.rstrip("/") + "/" if root else "/"
