"""The HTTP API's guard: a bearer token on every route but ``/healthz`` and the console's login page and
static files, compared in constant time, and a bound on the request body, enforced before FastAPI parses
anything.

The console (:mod:`deployments.console`) authenticates with a session cookie instead: the operator types
the token once into the login form and gets ``sdk_session`` (HttpOnly, SameSite=Strict; its value is an
expiry and an HMAC of it keyed by the token, never the token itself, so rotating the token ends every
session) and ``sdk_csrf`` (readable by the page's script). A request carried by the session cookie that
changes state (any method but GET, HEAD, OPTIONS) must also send ``X-CSRF-Token`` equal to ``sdk_csrf``
and, where the browser says where it comes from, an ``Origin`` of this host: a page on another site can
neither read the cookie nor set that header. An unauthenticated browser asking for a console page is sent
to the login page; every other unauthenticated request gets 401.

Its settings are per replica process, set by the Gateway when it starts (:func:`configure`). They live
in this module, not on the FastAPI object: Ray Serve serves a copy of the app and ships the Gateway's
code by value, so this importable module is the one place both see in the replica. Until configured,
the guard refuses every guarded request (it fails closed).
"""

import hashlib
import hmac
import json
import os
import time

from starlette.requests import cookie_parser

__all__ = ["CSRF_COOKIE", "OPEN_PATHS", "SESSION_COOKIE", "SESSION_S", "TOKEN_ENV", "RequestGuard", "check_token",
           "configure", "csrf_value", "new_session", "same_origin"]

TOKEN_ENV = "STREAMDYCOKE_API_TOKEN"
OPEN_PATHS = ("/healthz", "/ui/login")
OPEN_PREFIXES = ("/ui/static/",)  # the console's scripts and styles: no data, served to the login page too
SESSION_COOKIE, CSRF_COOKIE = "sdk_session", "sdk_csrf"
SESSION_S = 12 * 3600  # a console session's life
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

_settings: dict = {"configured": False, "token": None, "max_request_bytes": 64 * 1024}


def configure(args) -> None:
    """Take the token (``args.api_token``, else ``$STREAMDYCOKE_API_TOKEN``) and the size bound of an
    :class:`~deployments.config.AppArgs`; no token is an error unless ``args.allow_anonymous``."""
    token = args.api_token.get_secret_value() if args.api_token is not None else os.environ.get(TOKEN_ENV)
    if not token and not args.allow_anonymous:
        raise ValueError(f"no API token: set {TOKEN_ENV} (a Kubernetes Secret) or the app arg api_token; "
                         "allow_anonymous: true serves without one (a closed development setup only)")
    _settings.update(configured=True, token=token.encode() if token else None,
                     max_request_bytes=args.max_request_bytes)


def check_token(candidate: str) -> bool:
    """Whether ``candidate`` is the API token (constant time); True when the API has none."""
    token = _settings["token"]
    return token is None or hmac.compare_digest(candidate.encode(), token)


def _sign(message: str) -> str:
    return hmac.new(_settings["token"] or b"", message.encode(), hashlib.sha256).hexdigest()


def new_session(now: float | None = None) -> tuple[str, str]:
    """``(session cookie, CSRF token)`` for an operator who just gave the right token."""
    expires = int((time.time() if now is None else now) + SESSION_S)
    session = f"{expires}.{_sign(f'session:{expires}')}"
    return session, csrf_value(session)


def csrf_value(session: str) -> str:
    return _sign(f"csrf:{session}")


def _session_ok(session: str | None, now: float | None = None) -> bool:
    if not session or "." not in session:
        return False
    expires, _, mac = session.partition(".")
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac, _sign(f"session:{expires}"))


def _cookies(headers: dict) -> dict[str, str]:
    """The Cookie header's pairs, by Starlette's lenient parser (the one its ``Request.cookies`` uses):
    another site's malformed cookie on this host does not hide ours."""
    return cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))


def same_origin(headers: dict) -> bool:
    """No Origin (not a browser's cross-site request), or one naming this Host."""
    origin = headers.get(b"origin")
    if origin is None:
        return True
    host = headers.get(b"host", b"")
    return origin.split(b"://", 1)[-1] == host


def _refusal(scope, headers: dict) -> tuple[int, str] | None:
    """None if the request may pass; else the status and why."""
    token = _settings["token"]
    if token is None:
        return None
    if hmac.compare_digest(headers.get(b"authorization", b""), b"Bearer " + token):
        return None
    cookies = _cookies(headers)
    session = cookies.get(SESSION_COOKIE)
    if not _session_ok(session):
        return 401, "missing or wrong bearer token"
    if scope.get("method", "GET") not in _SAFE_METHODS:
        sent = headers.get(b"x-csrf-token", b"").decode("latin-1")
        if not hmac.compare_digest(sent, csrf_value(session)) or not same_origin(headers):
            return 403, "a console request that changes state needs its X-CSRF-Token, from this site"
    return None


async def _reply(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (headers or [])
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Pure ASGI middleware: authenticates, then reads the body in full up to the bound (whatever the
    Content-Length claims) and hands the application a replay of it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            if not _settings["configured"]:
                return await _reply(send, 503, "the API is starting")
            refused = _refusal(scope, dict(scope["headers"]))
            if refused is not None:
                status, detail = refused
                if status == 401 and (path == "/ui" or path.startswith("/ui/")) and scope.get("method") == "GET":
                    await send({"type": "http.response.start", "status": 303,
                                "headers": [(b"location", b"/ui/login"), (b"content-length", b"0")]})
                    return await send({"type": "http.response.body", "body": b""})
                return await _reply(send, status, detail,
                                    [(b"www-authenticate", b'Bearer realm="streamdycoke"')] if status == 401 else None)
        limit = _settings["max_request_bytes"]
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await _reply(send, 413, f"request body over {limit} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
