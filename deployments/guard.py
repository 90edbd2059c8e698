"""The HTTP API's guard: a bearer token on every route but ``/healthz``, compared in constant time, and a
bound on the request body, enforced before FastAPI parses anything.

Its settings are per replica process, set by the Gateway when it starts (:func:`configure`). They live
in this module, not on the FastAPI object: Ray Serve serves a copy of the app and ships the Gateway's
code by value, so this importable module is the one place both see in the replica. Until configured,
the guard refuses every guarded request (it fails closed).
"""

import hmac
import json
import os

__all__ = ["OPEN_PATHS", "TOKEN_ENV", "RequestGuard", "configure"]

TOKEN_ENV = "STREAMDYCOKE_API_TOKEN"
OPEN_PATHS = ("/healthz",)

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
        if scope["path"] not in OPEN_PATHS:
            if not _settings["configured"]:
                return await _reply(send, 503, "the API is starting")
            token = _settings["token"]
            if token is not None:
                auth = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(auth, b"Bearer " + token):
                    return await _reply(send, 401, "missing or wrong bearer token",
                                        [(b"www-authenticate", b'Bearer realm="streamdycoke"')])
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
