"""The Redis token cache: a :class:`streamdycoke.TokenStore` shared by every camera actor and LLM replica.

Key schema (``P`` = ``key_prefix``, default ``sdk``; ``{cam}`` is a Redis Cluster hash tag, so all
of one camera's keys live in one slot and the scripts below stay atomic on a cluster):

    P:{cam}:segs    hash    frame index -> segment bytes (StreamDyCoke wire format v1, fp16/bf16)
    P:{cam}:ts      zset    frame index, scored by capture timestamp
    P:{cam}:kf      zset    keyframe indices, scored by capture timestamp
    P:{cam}:bytes   string  bytes held in ``segs``
    P:{cam}:last    string  highest frame index stored
    P:{cam}:stats   string  the camera actor's latest counters (JSON), for the API's camera list
    P:{cam}:snap    hash    frame index -> a small JPEG of that processed frame (about one a second,
                            :mod:`actors.snapshots`), trimmed with the frames (same retention)
    P:{cam}:snapts  zset    snapshot frame indices, scored by capture timestamp
    P:{cam}:live    string  the newest processed frame, whole (segment bytes), replaced after every batch: the
                            now frame readers are given (:mod:`streamdycoke.reading`); expires with the
                            retention
    P:{cam}:evidence:<alert id>  string  the snapshot an alert's answer saw, copied when the alert is
                            raised (expires after ``evidence_ttl_s``: it outlives the frames' retention)
    P:alerts:acked  zset    alert ids an operator acknowledged, scored by when (the newest ``alerts_max``)
    P:fleet         string  the camera supervisor's placement (running, refused, unplaced; JSON), expiring
                            60 s after its last write (GET /v1/fleet without a fleet deployment)
    P:alerts        stream  alerts of every camera (JSON, schema ``streamdycoke.alert`` v1), capped
                            at ``alerts_max``; ``GET /v1/alerts`` serves it (:mod:`actors.alerts`)
    P:{cam}:alerting hash   standing query id -> 1 while its alert is raised (survives an actor restart)

Writes are one Lua script per segment, pipelined: ``HSETNX`` makes them idempotent on
(camera, frame index), so an at-least-once replay stores nothing twice. Retention per camera, by age
(``retention_s`` behind the newest frame) and by size (``max_bytes_per_camera``), always cuts at a
keyframe, so every window read still starts at one and reconstructs. No pickle: values are the
documented segment format and decode with a clear error if corrupt.

Size: one class owns the whole Redis key layout above (segments, snapshots, evidence, alerts, stats), so that
every key and its retention are read in one place; its code is under 300 lines.
"""

from __future__ import annotations

import json
import time
from typing import Iterable

from streamdycoke.segment import TokenSegment, encode_segment, read_header
from streamdycoke.store import CacheLostError, DecodedReads

from .config import RedisSettings

__all__ = ["RedisTokenStore"]

# One camera's batch, atomically (a script runs whole or not at all). KEYS: segs, ts, kf, bytes, last.
# ARGV[1]: the highest frame index the writer expects stored ('' : no check); then 4 per segment: frame
# index, timestamp, keyframe flag, bytes. Validates every segment before it writes anything (a rejected
# batch leaves no trace). A batch whose segments are all stored already is the replay of a write that
# was applied (a retried call): it stores nothing and is not checked; otherwise the cache must hold what
# the writer last stored (compared as text: exact for any index), else CACHE_LOST and nothing is written.
# Returns 1 per segment that was new, 0 per segment already stored.
_APPEND = """
local n = (#ARGV - 1) / 4
for i = 0, n - 1 do
  local ts = tonumber(ARGV[3 + 4 * i])
  if ts == nil or ts ~= ts or ts == math.huge or ts == -math.huge then
    return redis.error_reply('segment timestamp is not a finite number: ' .. ARGV[3 + 4 * i])
  end
end
if ARGV[1] ~= '' then
  local fresh = false
  for i = 0, n - 1 do
    if redis.call('HEXISTS', KEYS[1], ARGV[2 + 4 * i]) == 0 then fresh = true; break end
  end
  local cur = redis.call('GET', KEYS[5]) or '-1'
  if fresh and cur ~= ARGV[1] then
    return redis.error_reply('CACHE_LOST highest stored frame is ' .. cur .. ', its writer last stored ' .. ARGV[1])
  end
end
local out = {}
for i = 0, n - 1 do
  local idx, ts, kf, blob = ARGV[2 + 4 * i], ARGV[3 + 4 * i], ARGV[4 + 4 * i], ARGV[5 + 4 * i]
  if redis.call('HSETNX', KEYS[1], idx, blob) == 0 then
    out[i + 1] = 0
  else
    redis.call('ZADD', KEYS[2], ts, idx)
    if kf == '1' then redis.call('ZADD', KEYS[3], ts, idx) end
    redis.call('INCRBY', KEYS[4], string.len(blob))
    local last = redis.call('GET', KEYS[5])
    if last == false or tonumber(idx) > tonumber(last) then redis.call('SET', KEYS[5], idx) end
    out[i + 1] = 1
  end
end
return out
"""

# Drop every frame (and snapshot) older than ARGV[1] (a keyframe's timestamp). Returns frames dropped.
_TRIM = """
local members = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local freed = 0
for i, m in ipairs(members) do
  freed = freed + redis.call('HSTRLEN', KEYS[1], m)
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
if freed > 0 then redis.call('DECRBY', KEYS[4], freed) end
local snaps = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[1])
for i, m in ipairs(snaps) do redis.call('HDEL', KEYS[5], m) end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[1])
return #members
"""


class RedisTokenStore(DecodedReads):
    """A :class:`~streamdycoke.TokenStore` on Redis (redis-py). Opens no connection until first used."""

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings or RedisSettings()
        self._client = None
        self._retained_at: dict[str, float] = {}  # stream -> when retention last ran (monotonic)

    @property
    def client(self):
        if self._client is None:
            import redis

            from redis.backoff import NoBackoff
            from redis.retry import Retry

            s = self.settings
            # no silent retries inside the client: a failed call raises at once, and the caller (the camera
            # worker's recovery) counts it, backs off and resumes from what is durably stored
            kwargs = {"socket_timeout": s.socket_timeout_s, "socket_connect_timeout": s.socket_timeout_s,
                      "retry": Retry(NoBackoff(), 0)}
            if s.username is not None:
                kwargs["username"] = s.username
            if s.password is not None:
                kwargs["password"] = s.password.get_secret_value()
            if s.tls:
                kwargs["ssl_cert_reqs"] = "required"
                if s.tls_ca_certs:
                    kwargs["ssl_ca_certs"] = s.tls_ca_certs
                url = s.url.replace("redis://", "rediss://", 1)
            else:
                url = s.url
            if s.cluster:  # the url is a seed node; the client learns the slots and follows failovers
                from redis.backoff import ExponentialBackoff
                from redis.cluster import RedisCluster

                # a node lost: the client asks the others where its slots went and tries again, a few times
                # (what it writes is idempotent); past that the error reaches the camera's recovery
                kwargs["retry"] = Retry(ExponentialBackoff(cap=1.0, base=0.1), 5)
                self._client = RedisCluster.from_url(url, **kwargs)
            else:
                self._client = redis.Redis.from_url(url, **kwargs)
        return self._client

    def _script(self, source: str, keys: list[str], args: list, client=None):
        """Run a Lua script on ``client`` (a pipeline, or the client). EVAL with the source, not EVALSHA: a
        cluster node promoted by a failover may not hold the script, and the scripts are small."""
        return (client or self.client).execute_command("EVAL", source, len(keys), *keys, *args)

    def _keys(self, stream_id: str) -> list[str]:
        p = f"{self.settings.key_prefix}:{{{stream_id}}}"
        return [f"{p}:segs", f"{p}:ts", f"{p}:kf", f"{p}:bytes", f"{p}:last", f"{p}:stats"]

    def _snap_keys(self, stream_id: str) -> list[str]:
        p = f"{self.settings.key_prefix}:{{{stream_id}}}"
        return [f"{p}:snap", f"{p}:snapts"]

    # -- TokenStore --------------------------------------------------------------------------------
    def append(self, segment: TokenSegment) -> bool:
        return self.append_many([segment])[0]

    def append_many(self, segments: Iterable[TokenSegment], *, expect_last: int | None = None) -> list[bool]:
        """Store segments, one script per camera (atomic; pipelined on one server, one call each on a cluster,
        routed by the camera's slot); True for each that was new. Then apply retention, at most every
        ``retention_every_s`` per stream. ``expect_last``: see :meth:`streamdycoke.TokenStore.append_many`."""
        import redis

        segments = list(segments)
        if not segments:
            return []
        by_stream: dict[str, list[int]] = {}
        for i, seg in enumerate(segments):
            by_stream.setdefault(seg.stream_id, []).append(i)
        client = self.client
        runner = client if self.settings.cluster else client.pipeline(transaction=False)
        calls = []
        try:
            for stream_id, idx in by_stream.items():
                args: list = ["" if expect_last is None else str(expect_last)]
                for i in idx:
                    seg = segments[i]
                    args += [seg.frame_index, repr(seg.timestamp), int(seg.keyframe), encode_segment(seg)]
                calls.append(self._script(_APPEND, self._keys(stream_id)[:5], args, runner))
            if not self.settings.cluster:
                calls = runner.execute()
        except redis.ResponseError as exc:
            if "CACHE_LOST" in str(exc):
                raise CacheLostError(f"camera {segments[0].stream_id}: {str(exc).split('CACHE_LOST ', 1)[-1]}") from None
            raise
        added = [False] * len(segments)
        for idx, got in zip(by_stream.values(), calls):
            for i, x in zip(idx, got):
                added[i] = bool(x)
        now = time.monotonic()
        for stream_id in {s.stream_id for s in segments}:
            if now - self._retained_at.get(stream_id, -1e9) >= self.settings.retention_every_s:
                self._retain(stream_id)
                self._retained_at[stream_id] = now
        return added

    def read_raw(self, stream_id: str, start: float | None = None, end: float | None = None,
                 *, from_keyframe: bool = True) -> list[bytes]:
        segs_k, ts_k, kf_k = self._keys(stream_id)[:3]
        client = self.client
        lo = "-inf" if start is None else start
        if from_keyframe and start is not None:
            back = client.zrevrangebyscore(kf_k, start, "-inf", start=0, num=1, withscores=True)
            if back:
                lo = back[0][1]
        hi = "+inf" if end is None else end
        members = client.zrangebyscore(ts_k, lo, hi)
        if not members:
            return []
        blobs = [b for b in client.hmget(segs_k, members) if b is not None]  # None: trimmed between the calls
        blobs.sort(key=lambda b: read_header(b).frame_index)  # the header alone: no copy of the tokens
        return blobs

    def last_frame_index(self, stream_id: str) -> int | None:
        v = self.client.get(self._keys(stream_id)[4])
        return None if v is None else int(v)

    def newest_timestamp(self, stream_id: str) -> float | None:
        newest = self.client.zrevrange(self._keys(stream_id)[1], 0, 0, withscores=True)
        return newest[0][1] if newest else None

    def frame_count(self, stream_id: str) -> int:
        return int(self.client.zcard(self._keys(stream_id)[1]))

    def nbytes(self, stream_id: str) -> int:
        v = self.client.get(self._keys(stream_id)[3])
        return 0 if v is None else int(v)

    # -- the live frame (written by camera actors after each batch, read with every window) ----------
    def put_live(self, segment: TokenSegment) -> None:
        ttl = self.settings.retention_s
        self.client.set(self._live_key(segment.stream_id), encode_segment(segment),
                        ex=None if ttl is None else max(1, int(ttl)))

    def live_raw(self, stream_id: str) -> bytes | None:
        return self.client.get(self._live_key(stream_id))

    def _live_key(self, stream_id: str) -> str:
        return f"{self.settings.key_prefix}:{{{stream_id}}}:live"

    # -- snapshots (written by camera actors, read by the console; actors.snapshots) ---------------------
    def put_snapshots(self, stream_id: str, snapshots: Iterable[tuple[int, float, bytes]]) -> None:
        """Store ``(frame index, capture time, JPEG bytes)`` snapshots of a camera (idempotent per frame);
        they are trimmed with the frames."""
        snap_k, ts_k = self._snap_keys(stream_id)
        pipe = self.client.pipeline(transaction=False)
        for index, ts, jpeg in snapshots:
            pipe.hsetnx(snap_k, index, jpeg)
            pipe.zadd(ts_k, {index: ts})
        pipe.execute()

    def snapshot_index(self, stream_id: str, at: float | None = None) -> tuple[int, float] | None:
        """``(frame index, capture time)`` of the newest snapshot captured at or before ``at`` (None: the
        newest of all), or None if the camera has none."""
        got = self.client.zrevrangebyscore(self._snap_keys(stream_id)[1], "+inf" if at is None else at, "-inf",
                                           start=0, num=1, withscores=True)
        return (int(got[0][0]), got[0][1]) if got else None

    def snapshot_sizes(self, stream_id: str) -> list[int]:
        """Bytes of every snapshot the cache holds for a camera (a benchmark's figure)."""
        snap_k = self._snap_keys(stream_id)[0]
        fields = self.client.hkeys(snap_k)
        pipe = self.client.pipeline(transaction=False)
        for f in fields:
            pipe.hstrlen(snap_k, f)
        return [int(n) for n in pipe.execute()] if fields else []

    def snapshot(self, stream_id: str, frame_index: int) -> bytes | None:
        """The JPEG snapshot of one frame (None: none taken of it, or trimmed)."""
        return self.client.hget(self._snap_keys(stream_id)[0], frame_index)

    def keep_evidence(self, stream_id: str, alert_id: str, frame_index: int) -> bool:
        """Copy a frame's snapshot as an alert's evidence, kept ``evidence_ttl_s``; False if there was none."""
        jpeg = self.snapshot(stream_id, frame_index)
        if jpeg is None:
            return False
        self.client.set(self._evidence_key(stream_id, alert_id), jpeg, ex=max(1, int(self.settings.evidence_ttl_s)))
        return True

    def evidence(self, stream_id: str, alert_id: str) -> bytes | None:
        return self.client.get(self._evidence_key(stream_id, alert_id))

    def _evidence_key(self, stream_id: str, alert_id: str) -> str:
        return f"{self.settings.key_prefix}:{{{stream_id}}}:evidence:{alert_id}"

    # -- camera stats (written by camera actors, read by the API) --------------------------------------
    def set_stats(self, stream_id: str, stats: dict) -> None:
        self.client.set(self._keys(stream_id)[5], json.dumps(stats))

    def get_stats(self, stream_id: str) -> dict | None:
        v = self.client.get(self._keys(stream_id)[5])
        return None if v is None else json.loads(v)

    # -- the fleet's placement (written by whoever supervises the camera actors, read by the API) -------
    def set_fleet_status(self, status: dict, ttl_s: float = 60.0) -> None:
        """What the camera supervisor last saw (``refused`` and ``unplaced`` cameras with why, restarts); it
        expires ``ttl_s`` after the last write, so a supervisor that stopped leaves no stale placement."""
        self.client.set(f"{self.settings.key_prefix}:fleet", json.dumps(status), ex=max(1, int(ttl_s)))

    def fleet_status(self) -> dict | None:
        v = self.client.get(f"{self.settings.key_prefix}:fleet")
        return None if v is None else json.loads(v)

    def streams(self) -> list[str]:
        """Every camera the cache holds frames for."""
        prefix = f"{self.settings.key_prefix}:{{"
        out = set()
        for key in self.client.scan_iter(match=f"{self.settings.key_prefix}:{{*}}:last", count=1000):
            k = key.decode() if isinstance(key, bytes) else key
            out.add(k[len(prefix):k.rindex("}")])
        return sorted(out)

    # -- alerts (standing queries: actors.standing, actors.alerts) -----------------------------------
    def _alerts_key(self) -> str:
        return f"{self.settings.key_prefix}:alerts"

    def add_alert(self, record: dict) -> str:
        """Append an alert to the capped alert stream; returns its stream id."""
        eid = self.client.xadd(self._alerts_key(), {"alert": json.dumps(record)}, maxlen=self.settings.alerts_max,
                               approximate=True)
        self.set_alerting(record["camera"], record["query"], record["state"] == "raised")
        return eid.decode() if isinstance(eid, bytes) else eid

    def read_alerts(self, last_id: str = "0-0", block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict]]:
        """Alerts after stream id ``last_id`` (``"$"``: only those added from now), waiting up to
        ``block_ms`` for one; ``[(id, record)]``. An entry that is not valid JSON is logged and comes as
        ``(id, None)``, so a reader still moves past it."""
        import logging

        got = self.client.xread({self._alerts_key(): last_id}, count=count, block=block_ms)
        out = []
        for _key, entries in got or []:
            for eid, fields in entries:
                eid = eid.decode() if isinstance(eid, bytes) else eid
                raw = fields.get(b"alert", fields.get("alert"))
                try:
                    out.append((eid, json.loads(raw)))
                except (TypeError, ValueError):
                    logging.getLogger(__name__).error("alert stream entry %s is not JSON; skipped", eid)
                    out.append((eid, None))
        return out

    def last_alert_id(self) -> str | None:
        last = self.client.xrevrange(self._alerts_key(), count=1)
        if not last:
            return None
        eid = last[0][0]
        return eid.decode() if isinstance(eid, bytes) else eid

    def ack_alert(self, alert_id: str, when: float | None = None) -> None:
        """Mark an alert acknowledged by an operator (the newest ``alerts_max`` acknowledgements are kept)."""
        key = f"{self.settings.key_prefix}:alerts:acked"
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {alert_id: time.time() if when is None else when})
        pipe.zremrangebyrank(key, 0, -self.settings.alerts_max - 1)
        pipe.execute()

    def acked_alerts(self) -> dict[str, float]:
        """Acknowledged alert id -> when it was acknowledged (Unix time)."""
        got = self.client.zrange(f"{self.settings.key_prefix}:alerts:acked", 0, -1, withscores=True)
        return {(k.decode() if isinstance(k, bytes) else k): t for k, t in got}

    def set_alerting(self, stream_id: str, query: str, active: bool) -> None:
        key = f"{self.settings.key_prefix}:{{{stream_id}}}:alerting"
        if active:
            self.client.hset(key, query, 1)
        else:
            self.client.hdel(key, query)

    def alerting(self, stream_id: str) -> dict[str, bool]:
        """The standing queries of a camera whose alert is raised."""
        got = self.client.hgetall(f"{self.settings.key_prefix}:{{{stream_id}}}:alerting")
        return {(k.decode() if isinstance(k, bytes) else k): True for k in got}

    # -- retention ---------------------------------------------------------------------------------
    def _retain(self, stream_id: str) -> None:
        keys = self._keys(stream_id)
        client = self.client
        newest = self.newest_timestamp(stream_id)
        if newest is None:
            return
        cutoff = newest - self.settings.retention_s
        # by age: cut at the last keyframe at or before the cutoff (frames after it still reconstruct)
        k = client.zrevrangebyscore(keys[2], cutoff, "-inf", start=0, num=1, withscores=True)
        if k:
            self._script(_TRIM, keys[:4] + self._snap_keys(stream_id), [repr(k[0][1])])
        # by size: drop the oldest keyframe group while over budget, never the newest group
        while self.nbytes(stream_id) > self.settings.max_bytes_per_camera:
            second = client.zrange(keys[2], 1, 1, withscores=True)
            if not second:
                break
            self._script(_TRIM, keys[:4] + self._snap_keys(stream_id), [repr(second[0][1])])
