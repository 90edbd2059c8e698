"""What ``bench soak`` reports: where every acknowledged frame ended up (:func:`account`), the summary it
prints (:func:`print_soak`) and its plot (lag and memory over time, the faults marked)."""

import statistics
from pathlib import Path

__all__ = ["account", "placement_line", "print_soak", "rss_summary"]


def _spans(indices: set[int]) -> list[list[int]]:
    """``indices`` as sorted ``[first, last]`` spans (how lost frames are named in the JSON)."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def account(acked_runs: list[list[list[int]]], in_topic: set[int], skipped: set[int], stored: set[int]) -> dict:
    """Where each frame index a camera's ingest saw acknowledged ended up, and who lost the ones not stored.

    Args:
        acked_runs: per ingest run, the ``[first, last]`` spans of frame indices the broker acknowledged.
        in_topic: the indices the topic accounts for, read back from offset 0 with a fresh consumer.
        skipped: those of them skipped at the edge (never sent, accounted by skip counts: never stored).
        stored: the indices in the token cache (the soak processes every frame it is sent).

    An index acknowledged by two runs was reused (a restarted ingest resumed below the topic's end): the
    later frame cannot be stored, so it is lost, and by us, whatever the topic holds. Of the rest, an index
    acknowledged and absent from the topic was lost by the broker (proven by the read-back); one in the
    topic and not in the cache, by the pipeline. Each loss is named by its indices.

    >>> r = account([[[0, 9]], [[8, 12]]], set(range(11)), set(), set(range(10)))
    >>> r["lost"], r["index_reused"], r["lost_by_broker"], r["lost_in_pipeline"], r["lost_indices"]["broker"]
    (5, 2, 2, 1, [[11, 12]])
    """
    seen: set[int] = set()
    reused: set[int] = set()
    for spans in acked_runs:
        run = {i for a, b in spans for i in range(a, b + 1)}
        reused |= run & seen
        seen |= run
    by_broker = seen - in_topic - reused
    in_pipeline = (seen & in_topic) - stored - skipped - reused
    lost = (seen - stored - (skipped & in_topic)) | reused
    return {"acked": len(seen), "lost": len(lost), "index_reused": len(reused), "lost_by_broker": len(by_broker),
            "lost_in_pipeline": len(in_pipeline), "lost_indices": {"reused": _spans(reused), "broker": _spans(by_broker),
                                                                   "pipeline": _spans(in_pipeline)}}


def placement_line(fleet: dict) -> str:
    """Where the cameras and the Serve replicas run, by node role, from a ``GET /v1/fleet`` answer."""
    nodes = fleet.get("nodes") or {}
    role = {nid: n.get("role") or "?" for nid, n in nodes.items()}
    cams: dict[str, list[str]] = {}
    for cam, entry in (fleet.get("cameras") or {}).items():
        node = entry.get("node")
        cams.setdefault(f"{role.get(node, '?')}:{str(node)[:8]}", []).append(cam)
    reps = sorted({f"{r['deployment']}@{role.get(r['node'], '?')}" for r in fleet.get("replicas") or []})
    return f"placement: cameras {dict(sorted(cams.items()))}; replicas {reps}"


def rss_summary(samples: list[dict]) -> dict:
    """Per process kind: RSS after the first minute and at the end, and the change (flat memory)."""
    if not samples:
        return {}
    first = next((s for s in samples if s["t"] >= 60), samples[0])["rss_mib"]
    last = samples[-1]["rss_mib"]

    def kind(key: str) -> str:
        return "camera actors (mean)" if key.startswith("actor:") else key

    out = {}
    for label in sorted({kind(k) for k in last}):
        a = [v for k, v in first.items() if kind(k) == label]
        b = [v for k, v in last.items() if kind(k) == label]
        if a and b:
            a_m, b_m = statistics.mean(a), statistics.mean(b)
            out[label] = {"after_1min_mib": a_m, "end_mib": b_m, "change": (b_m - a_m) / a_m if a_m else None}
    return out


def print_soak(res: dict, plot: str | None = None) -> None:
    print(f"soak: {res['cameras']} cameras at {res['fps']} fps for {res['duration_s']:.0f} s, every frame stored, "
          f"a fault every {res['fault_every_s']:.0f} s")
    print(f"  faults injected {res['faults_injected']}, survived {res['faults_survived']} "
          f"(resume median {res['resume_s_median'] or 0:.1f} s, max {res['resume_s_max'] or 0:.1f} s)")
    for kind, v in res["faults_by_kind"].items():
        print(f"    {kind:<12} {v['survived']}/{v['injected']}")
    print("  " + placement_line(res.get("placement") or {}))
    for f in res["faults"]:
        if f["kind"] == "node_lost":
            print(f"    node {str(f.get('node'))[:8]} lost with cameras {f.get('cameras_on_node')}: declared dead after "
                  f"{f.get('detected_s') or float('nan'):.1f} s, every camera storing "
                  f"again after {f['resume_s'] or float('nan'):.1f} s, on nodes "
                  f"{sorted({str(n)[:8] for n in (f.get('moved_to') or {}).values()})}")
    if res.get("nodes_lost_metric") is not None:
        print(f"  streamdycoke_fleet_nodes_lost = {res['nodes_lost_metric']:g}")
    print(f"  frames published {res['frames_published']}, lost {res['frames_lost']} (acknowledged, then absent from the "
          f"topic read back from offset 0, i.e. by the broker: {res['frames_lost_by_broker']}; index reused by a "
          f"restarted ingest: {res['frames_index_reused']}; in the topic, not stored: {res['frames_lost_in_pipeline']}; "
          f"counted by the cameras as missing: {res['frames_reported_missing']}), stored twice {res['duplicates']}")
    for cam, v in res["per_camera"].items():
        named = {who: spans for who, spans in v["lost_indices"].items() if spans}
        if named:
            print(f"    {cam}: lost frame indices by cause {named}")
    q = res["queries"]
    print(f"  questions: {q['ok']} answered, {q['retryable']} retryable 503s, {q['hung']} hung, {q['other']} other errors")
    for label, r in res["rss_mib"].items():
        print(f"  RSS {label:<22} {r['after_1min_mib']:8.1f} MiB after 1 min -> {r['end_mib']:8.1f} MiB "
              f"({100 * (r['change'] or 0):+.1f}%)")
    if plot:
        _plot(res, plot)
        print(f"  plot: {plot}")


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in res["samples"]]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for c in res["per_camera"]:
        a1.plot(t, [s["lag"].get(c) if s["lag"].get(c) is not None else float("nan") for s in res["samples"]],
                lw=0.8)
    for f in res["faults"]:
        for ax in (a1, a2):
            ax.axvline(f["t"], color="red" if not f["survived"] else "grey", lw=0.6, ls="--")
        a1.text(f["t"], a1.get_ylim()[1], f["kind"], rotation=90, fontsize=6, va="top")
    a1.set_ylabel("lag (frames), per camera")
    keys = sorted({k for s in res["samples"] for k in s["rss_mib"] if not k.startswith("actor:")})
    for k in keys:
        a2.plot(t, [s["rss_mib"].get(k, float("nan")) for s in res["samples"]], label=k)
    a2.plot(t, [statistics.mean([v for kk, v in s["rss_mib"].items() if kk.startswith("actor:")] or [float("nan")])
                for s in res["samples"]], label="camera actor (mean)")
    a2.set_ylabel("RSS (MiB)")
    a2.set_xlabel("seconds")
    a2.legend(fontsize=7)
    fig.suptitle(f"soak: {res['cameras']} cameras, {res['faults_injected']} faults "
                 f"({res['faults_survived']} survived), {res['frames_lost']} frames lost, {res['duplicates']} twice")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
