"""The operator's console: served by the gateway at ``/ui/``, and the camera views it reads.

Pages (plain HTML, CSS and JavaScript in ``deployments/console_ui``, no build step):

- ``/ui/login``: the token is typed once; a right one gets a session cookie (:mod:`deployments.guard`).
- ``/ui/``: the camera wall, a camera's page (its snapshot with what the compressor kept over it, the
  keep ratio over the last minutes, a question box streaming through ``/v1/chat/completions``), and the
  alert inbox (live from ``GET /v1/alerts``, with each alert's evidence snapshot; acknowledge, filter).

Routes it adds to the API (bearer token or console session, like every other):

- ``GET /v1/cameras/{camera}/snapshot``: the newest snapshot (JPEG; ``X-Frame-Index``, ``X-Capture-Time``).
- ``GET /v1/cameras/{camera}/snapshots/{frame}``: one frame's snapshot, while the cache keeps it.
- ``GET /v1/cameras/{camera}/alerts/{alert}/snapshot``: an alert's evidence (kept ``evidence_ttl_s``).
- ``GET /v1/cameras/{camera}/kept``: what the compressor kept at the newest snapshot's frame
  (:func:`kept_view`) and the keep ratio over ``minutes``.
- ``POST /v1/alerts/{alert}/ack`` and ``GET /v1/alerts/acked``: operators' acknowledgements.

Like the guard's, this module's store is per replica process, set by the Gateway (:func:`configure`):
Serve ships the Gateway's code by value, so an importable module is where both meet.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from actors.names import CAMERA_ID_MAX, ID_PATTERN
from streamdycoke.segment import SegmentFormatError, read_header, read_positions

from . import guard

__all__ = ["STATIC_DIR", "configure", "kept_view", "router"]

STATIC_DIR = Path(__file__).with_name("console_ui")
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "login.css": "text/css"}
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
_PAGE_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
CAMERA = PathParam(min_length=1, max_length=CAMERA_ID_MAX, pattern=ID_PATTERN)
ALERT_ID = PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")

router = APIRouter()
_state: dict = {"store": None}


def configure(store) -> None:
    """Give the console's routes the token cache (a :class:`~actors.token_cache.RedisTokenStore`)."""
    _state["store"] = store


def _store():
    if _state["store"] is None:
        raise HTTPException(503, "the API is starting", headers={"Retry-After": "1"})
    return _state["store"]


def _cache(call, *args):
    """A cache read; Redis unreachable is a 503 the caller may retry."""
    try:
        return call(*args)
    except HTTPException:
        raise
    except SegmentFormatError as exc:
        raise HTTPException(500, f"corrupt token cache entry: {exc}") from None
    except Exception as exc:
        raise HTTPException(503, f"token cache unavailable ({type(exc).__name__}); retry",
                            headers={"Retry-After": "1"}) from None


# -- pages ------------------------------------------------------------------------------------------
@router.get("/ui", include_in_schema=False)
def _ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/", include_in_schema=False)
def _index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/ui/login", include_in_schema=False)
def _login_page(failed: int = 0) -> Response:
    page = (STATIC_DIR / "login.html").read_text()
    note = '<p class="error" role="alert">That token is not the API token.</p>' if failed else ""
    return Response(page.replace("<!--error-->", note), media_type="text/html", headers=_PAGE_HEADERS,
                    status_code=401 if failed else 200)


@router.post("/ui/login", include_in_schema=False)
async def _login(request: Request) -> Response:
    """The login form (``token``, urlencoded): a right token gets the session cookies and goes to the wall."""
    if not guard.same_origin(dict(request.scope["headers"])):
        raise HTTPException(403, "a login from another site")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    if not guard.check_token(token):
        return RedirectResponse("/ui/login?failed=1", status_code=303)
    session, csrf = guard.new_session()
    out = RedirectResponse("/ui/", status_code=303)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    out.set_cookie(guard.SESSION_COOKIE, session, max_age=guard.SESSION_S, httponly=True, samesite="strict",
                   secure=secure, path="/")
    out.set_cookie(guard.CSRF_COOKIE, csrf, max_age=guard.SESSION_S, httponly=False, samesite="strict",
                   secure=secure, path="/")
    return out


@router.post("/ui/logout", include_in_schema=False)
def _logout() -> Response:
    out = RedirectResponse("/ui/login", status_code=303)
    out.delete_cookie(guard.SESSION_COOKIE, path="/")
    out.delete_cookie(guard.CSRF_COOKIE, path="/")
    return out


@router.get("/ui/static/{name}", include_in_schema=False)
def _static(name: str) -> FileResponse:
    if name not in _STATIC:  # a fixed list: no path reaches outside the console's folder
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC_DIR / name, media_type=_STATIC[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


# -- camera views -----------------------------------------------------------------------------------
def _jpeg(data: bytes | None, what: str, headers: dict | None = None) -> Response:
    if data is None:
        raise HTTPException(404, f"no {what}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600", **(headers or {})})


@router.get("/v1/cameras/{camera}/snapshot")
def latest_snapshot(camera: str = CAMERA) -> Response:
    """The camera's newest snapshot (JPEG)."""
    store = _store()
    snap = _cache(store.snapshot_index, camera)
    if snap is None:
        raise HTTPException(404, f"no snapshot of camera {camera!r} (none cached, or it takes none)")
    data = _cache(store.snapshot, camera, snap[0])
    return _jpeg(data, f"snapshot of camera {camera!r}",
                 {"X-Frame-Index": str(snap[0]), "X-Capture-Time": repr(snap[1]), "Cache-Control": "no-store"})


@router.get("/v1/cameras/{camera}/snapshots/{frame}")
def frame_snapshot(camera: str = CAMERA, frame: int = PathParam(ge=0, lt=2**62)) -> Response:
    """One frame's snapshot, while the cache keeps it."""
    return _jpeg(_cache(_store().snapshot, camera, frame), f"snapshot of frame {frame} of camera {camera!r}")


@router.get("/v1/cameras/{camera}/alerts/{alert}/snapshot")
def alert_snapshot(camera: str = CAMERA, alert: str = ALERT_ID) -> Response:
    """An alert's evidence: the snapshot its answer saw."""
    return _jpeg(_cache(_store().evidence, camera, alert), f"evidence kept for alert {alert!r}")


def kept_view(blobs: list[bytes], frame: int | None = None) -> dict:
    """What the compressor kept at ``frame`` (None: the newest), from a camera's cached segments in order.

    Args:
        blobs: the camera's segments (wire bytes, ascending frame index), from a keyframe at or before
            ``frame`` on (the cache's window reads start at one).
        frame: the frame to show, e.g. the newest snapshot's.

    Returns:
        ``frame``, ``ts``, ``grid`` ``[H, W]``, ``keyframe``, ``kept`` (the positions the frame's segment
        kept, ascending, row-major in ``[0, H*W)``), ``age_s`` and ``age_frames`` (per position, ``H*W``
        long: how long ago, at that frame, the token a reader holds there was kept: 0 where the frame kept
        it; None where no segment read kept it), and ``history`` (``[ts, kept, positions]`` per segment).
    """
    headers = [read_header(b) for b in blobs]
    if not headers:
        raise ValueError("no segments")
    target = len(headers) - 1 if frame is None else next(
        (i for i in range(len(headers) - 1, -1, -1) if headers[i].frame_index <= frame), None)
    if target is None:
        raise ValueError(f"no segment at or before frame {frame}")
    start = next((i for i in range(target, -1, -1) if headers[i].keyframe), 0)
    h = headers[target]
    n = h.grid[0] * h.grid[1]
    last_ts: list[float | None] = [None] * n
    last_ix: list[int | None] = [None] * n
    kept: list[int] = []
    for i in range(start, target + 1):
        if headers[i].grid != h.grid:  # another grid (before a reconfiguration): nothing it held carries over
            last_ts, last_ix = [None] * n, [None] * n
            continue
        positions = read_positions(blobs[i]).tolist()
        for p in positions:
            last_ts[p], last_ix[p] = headers[i].timestamp, headers[i].frame_index
        if i == target:
            kept = positions
    return {
        "frame": h.frame_index, "ts": h.timestamp, "grid": list(h.grid), "keyframe": h.keyframe, "kept": kept,
        "age_s": [None if t is None else round(h.timestamp - t, 3) for t in last_ts],
        "age_frames": [None if x is None else h.frame_index - x for x in last_ix],
        "history": [[x.timestamp, x.num_kept, x.grid[0] * x.grid[1]] for x in headers],
    }


@router.get("/v1/cameras/{camera}/kept")
def kept(camera: str = CAMERA, minutes: float = Query(5.0, gt=0, le=60, allow_inf_nan=False)) -> dict:
    """What the compressor kept at the newest snapshot's frame (or the newest frame, when the camera takes no
    snapshots), with the keep ratio of every frame over the last ``minutes`` (:func:`kept_view`)."""
    store = _store()
    newest = _cache(store.newest_timestamp, camera)
    if newest is None:
        raise HTTPException(404, f"unknown camera {camera!r}: no frames cached")
    snap = _cache(store.snapshot_index, camera)
    blobs = _cache(store.read_raw, camera, newest - 60 * minutes, None)
    frame = snap[0] if snap is not None else None
    if snap is not None and blobs and read_header(blobs[0]).timestamp > snap[1]:
        blobs = _cache(store.read_raw, camera, snap[1], None)  # the snapshot is older than the minutes asked
    try:
        view = kept_view(blobs, frame)
    except SegmentFormatError as exc:
        raise HTTPException(500, f"corrupt token cache entry for {camera!r}: {exc}") from None
    except ValueError as exc:
        raise HTTPException(404, f"camera {camera!r}: {exc}") from None
    view["snapshot"] = None if snap is None else {"frame": snap[0], "ts": snap[1],
                                                  "url": f"/v1/cameras/{camera}/snapshots/{snap[0]}"}
    view["camera"] = camera
    return view


# -- acknowledgements -------------------------------------------------------------------------------
@router.post("/v1/alerts/{alert}/ack")
def ack(alert: str = ALERT_ID) -> dict:
    """Mark an alert acknowledged (idempotent; the time of the first acknowledgement is not kept)."""
    when = time.time()
    _cache(_store().ack_alert, alert, when)
    return {"id": alert, "acked_ts": when}


@router.get("/v1/alerts/acked")
def acked() -> dict:
    """Acknowledged alert id -> when (Unix time), the newest ``alerts_max``."""
    return {"acked": _cache(_store().acked_alerts)}
