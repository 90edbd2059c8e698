"""Standing queries: questions a camera keeps asking of its own recent window, and the alerts they raise.

A camera's config carries its standing queries (:class:`StandingQuery`): a prompt, when to ask it
(every ``every_s`` seconds and/or on a scene change, the frame sampler's cut), a rule that turns the
answer into a condition (:class:`AlertRule`: yes/no, a pattern, or a threshold on a number in the
answer) and hysteresis (:class:`Hysteresis`): ``raise_after`` rounds in a row with the condition
raise one alert, ``clear_after`` rounds without it clear it, so a condition that persists raises one
alert, not one per round.

:class:`StandingQueries` runs one camera's queries. It is owned by that camera's actor (the stream
owns its state): the worker tells it of each scene cut once the cut frame is durably cached, a thread
asks the due queries through an answerer (the LLM deployment, or the event-QA model,
:mod:`actors.answerers`) and hands every raised or cleared alert to the sinks (:mod:`actors.alerts`).
Its latency is measured from the trigger (the scheduled instant, or the cut frame's capture time) to
the decision.

A query reads a window that starts at an anchor and ends at the newest cached frame
(:class:`WindowAnchor`): the anchor stays put while the window is shorter than ``window_s + slide_s``
and then moves to ``window_s`` behind the newest frame. The window therefore grows only at its
newest end between moves, which is what lets the LLM replica prefill only the frames added since the
last round (:mod:`deployments.llm`); without reuse the same windows are asked, so answers are equal.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal

from streamdycoke.segment import read_header

from .queries import AlertRule, StandingQuery

__all__ = ["AlertRule", "Answer", "Hysteresis", "StandingQueries", "StandingQuery", "WindowAnchor"]

log = logging.getLogger(__name__)

class Hysteresis:
    """Turns a condition per round into alerts: ``raised`` after ``raise_after`` rounds in a row with it,
    ``cleared`` after ``clear_after`` rounds in a row without it, nothing otherwise."""

    def __init__(self, raise_after: int = 1, clear_after: int = 1, active: bool = False) -> None:
        self.raise_after, self.clear_after = raise_after, clear_after
        self.active = active
        self.streak = 0  # rounds in a row that disagree with the current state

    def update(self, condition: bool) -> Literal["raised", "cleared"] | None:
        if condition == self.active:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < (self.clear_after if self.active else self.raise_after):
            return None
        self.active, self.streak = condition, 0
        return "raised" if condition else "cleared"


class WindowAnchor:
    """Where a standing query's window starts: put while the window is shorter than ``window_s + slide_s``,
    then moved to ``window_s`` behind the newest frame."""

    def __init__(self, window_s: float, slide_s: float) -> None:
        self.window_s, self.slide_s = window_s, slide_s
        self.start: float | None = None

    def window(self, newest: float) -> float:
        """The window's start (a capture time) for a newest frame captured at ``newest``."""
        if self.start is None or newest - self.start > self.window_s + self.slide_s or newest < self.start:
            self.start = newest - self.window_s
        return self.start


@dataclass
class Answer:
    text: str
    visual_tokens: int = 0
    reused_tokens: int = 0


@dataclass
class _Due:
    trigger: str  # "period" or "scene_change"
    ts: float  # wall clock of the trigger: the scheduled instant or the cut frame's capture time


class StandingQueries:
    """One camera's standing queries: triggers, answers, rules, hysteresis, alerts.

    Args:
        camera: the camera id.
        queries: its standing queries.
        store: the token cache (its windows are read from here).
        answerers: answerer name -> callable ``(camera, query, segments, reuse_key) -> Answer``.
        publish: called with each alert record (:func:`actors.alerts.alert_record`).
        metrics: :class:`actors.metrics.StandingMetrics` or None.
        reuse: ask the LLM to keep and reuse each window's KV cache (incremental prefill).
        state: ``(camera, query) -> active`` from before a restart (alerts already raised stay raised).
    """

    def __init__(self, camera: str, queries: list[StandingQuery], store: Any,
                 answerers: dict[str, Callable[..., Answer]], publish: Callable[[dict], None],
                 metrics: Any = None, reuse: bool = True, state: dict[str, bool] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.camera, self.queries, self.store = camera, list(queries), store
        self.answerers, self.publish, self.metrics, self.reuse = answerers, publish, metrics, reuse
        self.clock = clock
        state = state or {}
        self.hysteresis = {q.id: Hysteresis(q.raise_after, q.clear_after, state.get(q.id, False)) for q in self.queries}
        if metrics is not None:
            for q in self.queries:
                metrics.active(q.id, self.hysteresis[q.id].active)
        self.anchors: dict[tuple[float, float], WindowAnchor] = {}  # shared by queries with one window: one cache
        now = clock()
        self.next_due = {q.id: now + q.every_s for q in self.queries if q.every_s is not None}
        self.due: dict[str, _Due] = {}
        self.latencies: list[tuple[str, str, float]] = []  # (query, trigger, seconds): the last 10,000 rounds
        self.rounds = 0
        self.reused_tokens = 0  # visual tokens the LLM took from kept caches instead of prefilling
        self.paused = False  # triggers are dropped while paused (a benchmark measures the stream without them)
        self._epoch = 0  # bumped by reset_stats: a round asked before a reset is not counted after it
        self._wake = threading.Condition()

    def reset_stats(self) -> None:
        """Start the round count, reused tokens and latency samples over; a round in flight is not counted."""
        self._epoch += 1
        self.latencies.clear()
        self.rounds = self.reused_tokens = 0

    # -- triggers ----------------------------------------------------------------------------------
    def scene_cut(self, capture_ts: float) -> None:
        """A frame the sampler cut on is cached (called by the camera worker after its batch commits)."""
        with self._wake:
            for q in self.queries:
                if q.on_scene_change and (q.id not in self.due or self.due[q.id].ts > capture_ts):
                    self.due[q.id] = _Due("scene_change", capture_ts)
            self._wake.notify()

    def _collect(self, now: float) -> list[tuple[StandingQuery, _Due]]:
        with self._wake:
            for q in self.queries:
                t = self.next_due.get(q.id)
                if t is not None and now >= t:
                    if q.id not in self.due:  # a pending trigger already covers this round
                        self.due[q.id] = _Due("period", t)
                    # the next round after now (rounds missed while answering are one round, not a backlog)
                    self.next_due[q.id] = t + q.every_s * max(1, math.ceil((now - t) / q.every_s))
            out = [(q, self.due.pop(q.id)) for q in self.queries if q.id in self.due]
        return out

    # -- rounds ------------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> list[dict]:
        """Ask every due query once; returns the alert records published."""
        from .alerts import alert_record

        alerts = []
        due_now = self._collect(self.clock() if now is None else now)
        if self.paused:
            return alerts
        for q, due in due_now:
            try:
                record = self._ask(q, due, alert_record)
            except Exception as exc:  # the answerer or the cache failed: counted, said once, tried next round
                reason = type(exc).__name__
                log.warning("camera %s: standing query %s failed: %s: %s", self.camera, q.id, reason, str(exc)[:300])
                if self.metrics is not None:
                    self.metrics.failed(q.id, reason)
                continue
            if record is not None:
                self.publish(record)
                alerts.append(record)
        return alerts

    def _ask(self, q: StandingQuery, due: _Due, alert_record) -> dict | None:
        newest = self.store.newest_timestamp(self.camera)
        if newest is None:
            if self.metrics is not None:
                self.metrics.failed(q.id, "no_frames")
            return None
        epoch = self._epoch
        anchor = self.anchors.setdefault((q.window_s, q.slide), WindowAnchor(q.window_s, q.slide))
        start = anchor.window(newest)
        window = self.store.reader_window_raw(self.camera, start=start)  # wire bytes, the live frame last: decoded once, by the answerer
        key = f"{self.camera}|{q.window_s:g}|{q.slide:g}" if self.reuse else None
        answer = self.answerers[q.answerer](self.camera, q, window, key)
        condition, value = q.rule.evaluate(answer.text)
        decided = self.clock()
        latency = max(0.0, decided - due.ts)
        if epoch == self._epoch:
            self.rounds += 1
            self.reused_tokens += answer.reused_tokens
            self.latencies.append((q.id, due.trigger, latency))
            del self.latencies[:-10_000]
        if self.metrics is not None:
            self.metrics.round(q.id, due.trigger, latency, readable=condition is not None)
        if condition is None:
            log.info("camera %s: standing query %s: answer %r is not readable by its %s rule", self.camera, q.id,
                     answer.text[:100], q.rule.kind)
            return None
        transition = self.hysteresis[q.id].update(condition)
        if transition is None:
            return None
        if self.metrics is not None:
            self.metrics.alert(q.id, transition)
        # the window's frames in order (the live frame last, or set aside when stale: streamdycoke.reading)
        headers = sorted((read_header(b) for b in window), key=lambda h: h.frame_index)
        alert_id = uuid.uuid4().hex
        return alert_record(self.camera, q, transition, answer, value, due.trigger, due.ts, decided, headers,
                            evidence=self._evidence(alert_id, headers[0], headers[-1]) if headers else None,
                            alert_id=alert_id)

    def _evidence(self, alert_id: str, oldest, newest) -> dict:
        """The alert's evidence: the newest frame its answer saw, and the newest snapshot within its window,
        copied for the alert (so it outlives the frames). A store without snapshots, or one failing, gives none
        (said in the log; the alert still goes out)."""
        from .alerts import evidence_url

        out = {"frame": newest.frame_index, "frame_ts": newest.timestamp, "snapshot": None}
        if not hasattr(self.store, "keep_evidence"):
            return out
        try:
            snap = self.store.snapshot_index(self.camera, at=newest.timestamp)
            if snap is not None and snap[1] >= oldest.timestamp and self.store.keep_evidence(self.camera, alert_id,
                                                                                               snap[0]):
                out["snapshot"] = {"frame": snap[0], "ts": snap[1], "url": evidence_url(self.camera, alert_id)}
        except Exception as exc:
            log.warning("camera %s: alert %s goes out without its snapshot: %s: %s", self.camera, alert_id,
                        type(exc).__name__, str(exc)[:200])
        return out

    def active(self) -> dict[str, bool]:
        return {q: h.active for q, h in self.hysteresis.items()}

    def run(self, stop: threading.Event) -> None:
        """Ask due queries until ``stop``: woken by a scene cut, or at the next period."""
        while not stop.is_set():
            self.step()
            now = self.clock()
            with self._wake:
                if self.due or stop.is_set():
                    continue
                wait = min([t - now for t in self.next_due.values()] + [0.5])
                self._wake.wait(max(0.0, wait))

    def stop(self) -> None:
        with self._wake:
            self._wake.notify_all()
