"""The RayService's autoscaling of the LLM replicas, exercised on a local Ray cluster of several nodes: the
autoscaling policy of ``k8s/base/rayservice.yaml`` (its delays and look-back shortened so that the test
takes a minute), the replicas on the node that stands in for the accelerator group."""

import threading
from pathlib import Path

import pytest
import yaml

from ..conftest import needs_isolated_network, needs_ray_cluster, wait_for
from .conftest import TINY, TOKEN
from .test_app import http

pytestmark = [needs_isolated_network, needs_ray_cluster,
              # a second's metrics instead of ten: the field Serve will replace by environment variables
              pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[2]


def manifest_autoscaling() -> dict:
    """The LLM deployment's ``autoscaling_config`` in the RayService's ``serveConfigV2``."""
    docs = list(yaml.safe_load_all((ROOT / "k8s/base/rayservice.yaml").read_text()))
    [rs] = [d for d in docs if d and d.get("kind") == "RayService"]
    [app] = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    return app["args"]["autoscaling_config"]


def running_replicas(serve, app: str) -> int:
    """How many LLM replicas of ``app`` Serve reports running."""
    return serve.status().applications[app].deployments["LLMDeployment"].replica_states.get("RUNNING", 0)


def replica_nodes(app: str) -> set[str]:
    """The nodes the LLM replicas of ``app`` run on (Ray's table of live actors)."""
    from ray.util.state import list_actors

    return {a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if f"{app}#LLMDeployment" in (a.name or "")}


def test_llm_replicas_are_added_when_queries_queue_and_removed_when_idle():
    import numpy as np
    from ray import serve

    from actors.token_cache import RedisTokenStore
    from deployments.app import build_app
    from deployments.config import AppArgs
    from streamdycoke import StreamCompressor, StreamConfig
    from streamdycoke.encoders import build_encoder
    from tools.stack import LocalStack

    policy = manifest_autoscaling()
    assert policy["min_replicas"] >= 1 and policy["max_replicas"] >= 2  # what the cluster may scale between
    # the manifest's policy (its target of queries in flight per replica) at test speed: its delays and
    # look-back cut to seconds, two replicas at most (the accelerator node holds two halves)
    auto = {**policy, "min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 1.0,
            "downscale_delay_s": 4.0, "metrics_interval_s": 0.5, "look_back_period_s": 2.0}
    callers = 2 * policy["target_ongoing_requests"]  # twice what one replica should hold in flight
    with LocalStack(camera_nodes=1, accelerator_node=True) as stack:
        import ray

        [accel] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("accelerator")]
        app = AppArgs(model=TINY, redis=stack.redis, num_cpus=0.1, resources={"accelerator": 0.5},
                      autoscaling_config=auto, gateway_num_cpus=0.1, api_token=TOKEN)
        serve.run(build_app(app), name="auto", route_prefix="/")
        # a camera's window in the cache, compressed by the LLM's own (tiny) tower
        enc = build_encoder(TINY)
        comp = StreamCompressor(StreamConfig(window=8))
        state = comp.new_state("porch")
        frames = np.random.default_rng(0).integers(0, 256, (12, *enc.input_size, 3), dtype=np.uint8)
        store = RedisTokenStore(stack.redis)
        toks = enc.encode(frames)
        for i in range(12):
            store.append(comp.process(state, toks[i], enc.grid, i, i / 5))
        assert running_replicas(serve, "auto") == 1

        stop = threading.Event()
        answers: list = []  # each query's status, or the error a caller met

        def ask() -> None:
            while not stop.is_set():
                try:
                    status, _ = http(stack.http_port, "POST", "/v1/query",
                                     {"camera": "porch", "question": "what moves?", "max_new_tokens": 256}, timeout=120)
                except Exception as exc:  # seen in the assertion below, not lost with the thread
                    status = repr(exc)
                answers.append(status)

        clients = [threading.Thread(target=ask, daemon=True) for _ in range(callers)]
        for c in clients:
            c.start()
        try:  # the callers keep more queries in flight than one replica's target: a second one is added
            wait_for(lambda: running_replicas(serve, "auto") == 2, timeout_s=90)
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=150)
        assert answers and set(answers) == {200}, sorted(set(answers))
        assert replica_nodes("auto") == {accel}, "both replicas on the accelerator node, as their resource says"
        # idle: back to the minimum once the downscale delay has passed
        wait_for(lambda: running_replicas(serve, "auto") == 1, timeout_s=90)
        serve.delete("auto")
