"""One reader of the alert stream per gateway replica, fanned out to every ``GET /v1/alerts`` listener.

Each listener could read Redis itself, but a blocking read per listener holds a worker thread each
(asyncio's default pool has a handful), so a few dozen listeners would wait on each other. Instead
:class:`AlertFeed` runs one background read of the stream (``XREAD BLOCK``) and puts each alert on
every subscriber's queue; a subscriber that asked for past alerts (``since``) reads those up to where
the feed stood when it subscribed, then takes the feed from there: nothing missed, nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["AlertFeed", "Subscription"]

log = logging.getLogger(__name__)


def _key(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """A listener's queue; ``overflowed`` when it fell ``max_queue`` alerts behind (its stream then ends)."""

    def __init__(self, max_queue: int) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.overflowed = False


class AlertFeed:
    """Args: store: a :class:`~actors.token_cache.RedisTokenStore`; block_ms: one read's longest wait."""

    def __init__(self, store: Any, block_ms: int = 1000, max_queue: int = 1000) -> None:
        self.store, self.block_ms, self.max_queue = store, block_ms, max_queue
        self.subs: set[Subscription] = set()
        self.last: str | None = None  # the newest alert id the feed has handed out
        self.error: str | None = None  # the stream cannot be read (said to listeners, retried)
        self._task: asyncio.Task | None = None

    async def subscribe(self, since: str = "$") -> tuple[list[tuple[str, dict]], Subscription]:
        """``(past alerts after since, subscription to the live ones)``; ``since`` ``$``: none past."""
        if self._task is None or self._task.done():
            self.last = await asyncio.to_thread(self.store.last_alert_id) or "0-0"
            self._task = asyncio.create_task(self._run())
        sub = Subscription(self.max_queue)
        self.subs.add(sub)  # from here on the feed delivers what comes after `upto`
        upto = self.last
        history: list[tuple[str, dict]] = []
        cursor = "0-0" if since == "0" else since
        while since != "$" and _key(cursor) < _key(upto):
            try:
                got = await asyncio.to_thread(self.store.read_alerts, cursor, None, 500)
            except Exception:
                self.subs.discard(sub)
                raise
            if not got:
                break
            for eid, record in got:
                if _key(eid) > _key(upto):
                    break
                if record is not None:  # an entry that was not JSON (logged by the store)
                    history.append((eid, record))
            cursor = got[-1][0]
        return history, sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.discard(sub)

    async def _run(self) -> None:
        while True:
            try:
                got = await asyncio.to_thread(self.store.read_alerts, self.last, self.block_ms)
                self.error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: listeners are told, the feed tries again
                self.error = f"token cache unavailable ({type(exc).__name__})"
                await asyncio.sleep(1.0)
                continue
            for eid, record in got:
                self.last = eid
                if record is None:  # an entry that was not JSON (logged by the store)
                    continue
                for sub in list(self.subs):
                    try:
                        sub.queue.put_nowait((eid, record))
                    except asyncio.QueueFull:  # a listener that does not read: its stream ends, said so
                        sub.overflowed = True
                        self.subs.discard(sub)
                        log.warning("an alert listener fell %d alerts behind; its stream is ended", self.max_queue)
