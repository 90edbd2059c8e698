"""Where the fleet runs: the Ray nodes (alive or lost, their role and resources) and Serve's replicas.

:class:`NodeWatch` is the supervisor's view of the cluster. It reads Ray's node table on each round,
counts a node seen alive and then dead as lost (once), and names the cameras it carried; it reads where
Serve's replicas run from Ray's state API (which needs Ray's dashboard; without it, ``None``). It owns no
camera: the supervisor tells it which camera runs on which node.
"""

from __future__ import annotations

import logging
import time

import ray

__all__ = ["CAMERA_RESOURCE", "CAMERA_SLOTS_PER_CPU", "NodeWatch"]

log = logging.getLogger(__name__)

# Camera actors are placed by a custom resource, a camera slot (``camera``), not by fractions of a CPU:
# a node declares how many cameras it can carry (measured: ``streamdycoke bench pipeline --cameras
# 1,2,4,8,16``, see the README) and each actor takes one slot. An actor asks for no CPU of its own
# (``num_cpus=0``), so fractional CPU bookkeeping next to Serve's replicas never leaves one unschedulable
# on a node that has slots.
CAMERA_RESOURCE = "camera"
CAMERA_SLOTS_PER_CPU = 8

SHOWN_RESOURCES = ("CPU", "GPU", CAMERA_RESOURCE, "accelerator")  # what a node's entry says it offers


class NodeWatch:
    """Ray's nodes as the supervisor last read them.

    Attributes:
        nodes: node id -> ``{"alive": bool, "role": the node's ``role`` label or None, "resources": {...}}``
            (CPU, GPU, camera slots, accelerator); Ray keeps a dead node listed for a while.
        lost: nodes seen alive and then dead since this watch started (a node dead before it is not).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}
        self.lost = 0
        self._alive: set[str] = set()
        self._replicas: tuple[float, list[dict] | None] = (float("-inf"), None)  # (when read, the replicas)

    def update(self, camera_nodes: dict[str, str]) -> dict[str, dict]:
        """Read Ray's node table into :attr:`nodes`; a node seen alive and now dead is counted in
        :attr:`lost` and logged with the cameras it carried (``camera_nodes``: camera -> node id)."""
        nodes = {}
        for n in ray.nodes():
            res = n.get("Resources") or {}
            nodes[n["NodeID"]] = {"alive": bool(n.get("Alive")), "role": (n.get("Labels") or {}).get("role"),
                                  "resources": {k: v for k, v in res.items() if k in SHOWN_RESOURCES}}
        for node in [nid for nid in self._alive if not nodes.get(nid, {}).get("alive")]:
            self._alive.discard(node)
            self.lost += 1
            on_it = sorted(cam for cam, nid in camera_nodes.items() if nid == node)
            log.warning("Ray node %s lost; its cameras %s restart where camera slots are free", node, on_it)
        self._alive |= {nid for nid, n in nodes.items() if n["alive"]}
        self.nodes = nodes
        return nodes

    def counts(self) -> dict[str, int]:
        """``{"alive": n, "dead": m}`` over :attr:`nodes` (the fleet's ``streamdycoke_fleet_nodes``)."""
        alive = sum(n["alive"] for n in self.nodes.values())
        return {"alive": alive, "dead": len(self.nodes) - alive}

    def with_cameras(self, camera_nodes: dict[str, str]) -> dict[str, dict]:
        """:attr:`nodes`, sorted, each with the sorted ``cameras`` it carries."""
        return {nid: {**n, "cameras": sorted(c for c, m in camera_nodes.items() if m == nid)}
                for nid, n in sorted(self.nodes.items())}

    def replicas(self, every_s: float = 5.0) -> list[dict] | None:
        """Serve's live replicas, ``[{"app", "deployment", "node"}]`` sorted, read from Ray's state API at
        most every ``every_s`` (at this cluster's own address: with two Ray instances on one machine the
        API would otherwise pick the latest); None where the API does not answer (no dashboard)."""
        when, cached = self._replicas
        if time.monotonic() - when < every_s:
            return cached
        out = None
        try:
            from ray.util.state import list_actors

            actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                                 timeout=2, raise_on_missing_output=False)
            # a replica actor's name is SERVE_REPLICA::<app>#<deployment>#<replica id>
            out = sorted(({"app": a.name.split("::", 1)[-1].split("#")[0], "deployment": a.name.split("#")[1],
                           "node": a.node_id}
                          for a in actors if a.name and a.name.startswith("SERVE_REPLICA::") and a.name.count("#") >= 2),
                         key=lambda r: (r["app"], r["deployment"], r["node"]))
        except Exception as exc:
            log.debug("replica placement not read (%s)", exc)
        self._replicas = (time.monotonic(), out)
        return out
