"""The faults ``bench soak`` injects (:data:`FAULTS`), one at a time: :func:`inject` starts one, ends it
and measures how long until the cameras store again (see :mod:`tools.bench_soak` for each kind)."""

import time

__all__ = ["FAULTS", "inject", "last_index"]

FAULTS = ("redis_kill", "redis_cut", "broker_kill", "ingest_kill", "actor_kill", "llm_kill", "node_lost")


def last_index(store, camera: str) -> int:
    """The newest frame index ``store`` holds for ``camera``; -1 when it holds none."""
    i = store.last_frame_index(camera)
    return -1 if i is None else i


def inject(kind, cam, stack, proxy, sup, supervise, store, ids, start_ingest, stop_ingest, outage_s, resume_s,
            log, queries) -> dict:
    """Inject one fault, end it, and measure how long until every camera stores a newer frame (an LLM
    fault: until a question is answered again)."""
    import ray

    broker, valkey = stack.kafka_server, stack.redis_server

    if kind == "llm_kill":
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "serve" and "LLMDeployment" in a["name"]]
        log(f"  fault: {kind}")
        for name in names:
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        back = time.monotonic()
        while time.monotonic() < back + resume_s:
            if queries["last_ok"] > back:
                return {"kind": kind, "camera": None, "survived": True, "resume_s": queries["last_ok"] - back}
            time.sleep(0.25)
        log(f"  {kind}: no question answered within {resume_s:.0f} s")
        return {"kind": kind, "camera": None, "survived": False, "resume_s": None}

    before = {c: last_index(store, c) for c in ids}
    log(f"  fault: {kind}" + (f" ({cam})" if kind in ("ingest_kill", "actor_kill", "node_lost") else ""))
    extra: dict = {}
    if kind == "redis_kill":
        valkey.kill()
        time.sleep(outage_s)
        valkey.start()
    elif kind == "redis_cut":
        proxy.cut()
        time.sleep(outage_s)
        proxy.restore()
    elif kind == "broker_kill":
        broker.kill()
        time.sleep(outage_s)
        broker.start()
    elif kind == "ingest_kill":
        stop_ingest(cam)
        start_ingest(cam)
    elif kind == "actor_kill":
        ray.kill(sup.actors[cam], no_restart=False)
    elif kind == "node_lost":
        node = sup.camera_nodes.get(cam) or next(iter(sup.camera_nodes.values()))
        on_it = sorted(c for c, n in sup.camera_nodes.items() if n == node)
        stack.kill_node(node)
        extra = {"node": node, "cameras_on_node": on_it}
    back = time.monotonic()
    deadline = back + resume_s
    while time.monotonic() < deadline:
        supervise()
        if kind == "node_lost" and "detected_s" not in extra and not sup.nodes.get(extra["node"], {}).get("alive", True):
            extra["detected_s"] = time.monotonic() - back  # Ray declared the node dead (its health checks)
        try:
            if all(last_index(store, c) > before[c] for c in ids):
                out = {"kind": kind, "camera": cam, "survived": True, "resume_s": time.monotonic() - back, **extra}
                break
        except Exception:  # the bench's own read during an outage
            pass
        time.sleep(0.25)
    else:
        log(f"  {kind}: not every camera resumed within {resume_s:.0f} s")
        out = {"kind": kind, "camera": cam, "survived": False, "resume_s": None, **extra}
    if kind == "node_lost":  # where its cameras went, then the node returns (a fresh one; nothing moves back)
        deadline = time.monotonic() + resume_s
        while time.monotonic() < deadline and any(sup.camera_nodes.get(c) in (None, extra["node"]) for c in ids):
            supervise()
            time.sleep(0.25)
        out["moved_to"] = {c: sup.camera_nodes.get(c) for c in extra["cameras_on_node"]}
        time.sleep(outage_s)
        out["node_returned"] = stack.add_camera_node()
    return out
