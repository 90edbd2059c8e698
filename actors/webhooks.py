"""Webhooks: alerts POSTed to an HTTP endpoint, signed as the Standard Webhooks specification says.

A :class:`Webhook` is configured on a camera (``CameraConfig.webhooks``: every alert of the camera) or on
one standing query (``StandingQuery.webhooks``: that query's alerts); :func:`webhook_routes` says which
is which, and :class:`actors.alerts.AlertSinks` keeps one sink per webhook, with its own pending alerts
and :class:`actors.backoff.Backoff`.

:class:`WebhookSender` sends one alert: a POST whose body is the alert record as JSON (``format:
alert``) or a Slack incoming-webhook message (``format: slack``, ``{"text": ...}``), with the headers
``webhook-id`` (the alert's ``id``, so a receiver can drop a repeat), ``webhook-timestamp`` and
``webhook-signature`` made by the ``standardwebhooks`` library. A receiver verifies them with the same
library and the same ``whsec_`` secret. A response other than 2xx, a redirect (never followed), a
timeout, a connection error or a secret that cannot be read is a failure, raised as
:class:`WebhookError`. Requests go through :mod:`urllib.request`, so the process's ``https_proxy`` /
``no_proxy`` apply.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["Webhook", "WebhookError", "WebhookSender", "slack_text", "webhook_routes"]

_SECRET_PREFIX = "whsec_"
_SECRET_BYTES = (24, 64)  # the sizes the specification recommends for a signing key


def _check_secret(value: str) -> None:
    """``ValueError`` unless ``value`` is ``whsec_`` + base64 of 24 to 64 bytes (never echoing it)."""
    if not value.startswith(_SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {_SECRET_PREFIX} (the Standard Webhooks form)")
    body = value[len(_SECRET_PREFIX):]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {_SECRET_PREFIX} followed by base64") from None
    if not _SECRET_BYTES[0] <= len(key) <= _SECRET_BYTES[1]:
        raise ValueError(f"a webhook secret's key is {_SECRET_BYTES[0]} to {_SECRET_BYTES[1]} bytes, not {len(key)}")


class Webhook(BaseModel):
    """An HTTP endpoint that receives alerts (an entry of ``CameraConfig.webhooks`` or ``StandingQuery.webhooks``).

    The signing secret is given inline (``secret``) or, better, named by an environment variable
    (``secret_env``, where Kubernetes puts a Secret), never both; it stays a :class:`~pydantic.SecretStr`
    until :meth:`signing_secret`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # no secret in an error

    url: str = Field(max_length=2000, description="http:// or https:// endpoint the alerts are POSTed to")
    secret: SecretStr | None = Field(None, description="the signing secret, whsec_ + base64 (Standard Webhooks)")
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200,
                                   description="the environment variable holding the signing secret")
    format: Literal["alert", "slack"] = Field("alert", description=(
        "alert: the body is the alert record (JSON, schema streamdycoke.alert); slack: a Slack incoming-webhook "
        "message {text}"))
    timeout_s: float = Field(5.0, gt=0, le=60, allow_inf_nan=False, description="a POST not answered this long fails")
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9._-]*$",
                             description="names the sink (webhook:<name>) in logs; default: its position")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url is http:// or https:// with a host")
        return url

    @model_validator(mode="after")
    def _one_secret(self) -> "Webhook":
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give a webhook exactly one of secret and secret_env")
        if self.secret is not None:
            _check_secret(self.secret.get_secret_value())
        return self

    def signing_secret(self) -> str:
        """The secret (the one place it is unwrapped); ``ValueError`` when ``secret_env`` is unset or malformed."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        value = os.environ.get(self.secret_env or "")
        if not value:
            raise ValueError(f"the webhook secret variable {self.secret_env} is not set")
        try:
            _check_secret(value)
        except ValueError as exc:
            raise ValueError(f"${self.secret_env}: {exc}") from None
        return value


def webhook_routes(camera: Any) -> dict[str | None, list[Webhook]]:
    """A camera config's webhooks by the query they serve: None for the camera's own (every alert), else
    the standing query's id. Queries without webhooks are left out."""
    routes: dict[str | None, list[Webhook]] = {None: list(camera.webhooks)} if camera.webhooks else {}
    routes.update({q.id: list(q.webhooks) for q in camera.standing if q.webhooks})
    return routes


class WebhookError(Exception):
    """A webhook did not take an alert (non-2xx, redirect, timeout, connection error, no secret)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an error, not a place to send the alert (and its signature) to."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _snapshot_ref(evidence: Any) -> str | None:
    """The gateway path of a record's evidence snapshot (``evidence.snapshot.url``, see
    :data:`actors.alerts.ALERT_SCHEMA`), None when it has none."""
    snapshot = evidence.get("snapshot") if isinstance(evidence, dict) else None
    url = snapshot.get("url") if isinstance(snapshot, dict) else None
    return str(url) if url else None


def slack_text(record: dict) -> str:
    """One Slack message (mrkdwn) summarising an alert: state, camera, query, prompt, answer and, when the
    record has evidence with a snapshot, the snapshot's path on the gateway."""
    def field(key: str, default: str = "") -> str:
        return _slack_escape(str(record.get(key, default)))

    lines = [f"*{field('state', '?').upper()}*: camera `{field('camera', '?')}`, query `{field('query', '?')}`",
             f"> {field('prompt')}",
             f"Answer: {field('answer')}"]
    ref = _snapshot_ref(record.get("evidence"))
    if ref is not None:
        lines.append(f"Snapshot (on the gateway): {_slack_escape(ref)}")
    return "\n".join(lines)


class WebhookSender:
    """POSTs alerts to one :class:`Webhook`, signed (Standard Webhooks, ``standardwebhooks`` library).

    Args:
        hook: the endpoint.
        wall: the clock of the ``webhook-timestamp`` header (Unix seconds; receivers refuse a skew past 5 min).
    """

    def __init__(self, hook: Webhook, wall: Callable[[], float] = time.time) -> None:
        self.hook, self.wall = hook, wall
        self._opener = urllib.request.build_opener(_NoRedirect)

    def body(self, record: dict) -> str:
        """What is POSTed for ``record`` (JSON text; the signature covers exactly these bytes)."""
        if self.hook.format == "slack":
            return json.dumps({"text": slack_text(record)})
        return json.dumps(record, separators=(",", ":"))

    def headers(self, record: dict, body: str) -> dict[str, str]:
        """The request's headers, with the Standard Webhooks signature of ``body``."""
        from standardwebhooks import Webhook as Signer

        try:
            signer = Signer(self.hook.signing_secret())
        except ValueError as exc:
            raise WebhookError(str(exc)) from None
        ts = int(self.wall())
        signature = signer.sign(record["id"], datetime.fromtimestamp(ts, tz=timezone.utc), body)
        return {"content-type": "application/json", "user-agent": "streamdycoke-alerts/1",
                "webhook-id": record["id"], "webhook-timestamp": str(ts), "webhook-signature": signature}

    def send(self, record: dict) -> int:
        """POST ``record``; the status (2xx) or :class:`WebhookError`."""
        body = self.body(record)
        request = urllib.request.Request(self.hook.url, data=body.encode(), method="POST",
                                         headers=self.headers(record, body))
        try:
            with self._opener.open(request, timeout=self.hook.timeout_s) as response:
                response.read(65536)
                status = response.status
        except urllib.error.HTTPError as exc:  # non-2xx, a refused redirect included
            exc.close()
            raise WebhookError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # no connection, timeout, reset
            reason = getattr(exc, "reason", exc)
            raise WebhookError(f"{type(reason).__name__}: {str(reason)[:200]}") from None
        if not 200 <= status < 300:
            raise WebhookError(f"HTTP {status}")
        return status
