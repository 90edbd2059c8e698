"""The camera supervisor's view of the Ray nodes (unit: Ray's node table and the actors' answers are
stand-ins): a node seen alive and then dead is counted once and named with the cameras it carried, and
the placement says where each camera runs and what each node carries."""

import logging

import ray

from actors.config import KafkaSettings, RedisSettings
from actors.supervisor import CameraSupervisor


def _node(nid: str, alive: bool, role: str, **resources) -> dict:
    return {"NodeID": nid, "Alive": alive, "Labels": {"role": role, "ray.io/node-id": nid},
            "Resources": {"memory": 1e9, **resources}}


def test_a_lost_node_is_counted_once_and_named_with_its_cameras(monkeypatch, caplog):
    sup = CameraSupervisor(KafkaSettings(), RedisSettings())
    sup.actors = {"porch": object(), "gate": object()}
    sup.camera_nodes = {"porch": "w1", "gate": "w2"}
    table = [_node("h", True, "head", CPU=2.0), _node("w1", True, "cameras", camera=4.0),
             _node("w2", True, "cameras", camera=4.0)]
    monkeypatch.setattr(ray, "nodes", lambda: table)
    monkeypatch.setattr(sup, "replicas", lambda every_s=5.0: None)
    sup.watch_nodes()
    assert sup.nodes_lost == 0
    assert sup.nodes["w1"] == {"alive": True, "role": "cameras", "resources": {"camera": 4.0}}
    table[1] = _node("w1", False, "cameras", camera=4.0)
    with caplog.at_level(logging.WARNING, logger="actors.placement"):
        sup.watch_nodes()
        sup.watch_nodes()  # still dead: not counted again
    assert sup.nodes_lost == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Ray node w1 lost; its cameras ['porch'] restart where camera slots are free"]
    placed = sup.placement()
    assert placed["nodes_lost"] == 1 and placed["replicas"] is None
    assert placed["nodes"]["w1"]["alive"] is False and placed["nodes"]["w1"]["cameras"] == ["porch"]
    assert placed["cameras"] == {"gate": {"restarts": 0, "node": "w2"}, "porch": {"restarts": 0, "node": "w1"}}
    assert placed["nodes"]["h"]["cameras"] == []


def test_a_node_that_was_never_seen_alive_is_not_a_loss(monkeypatch):
    sup = CameraSupervisor(KafkaSettings(), RedisSettings())
    monkeypatch.setattr(ray, "nodes", lambda: [_node("old", False, "cameras", camera=2.0)])
    sup.watch_nodes()  # a node dead before this supervisor started (Ray keeps dead nodes listed)
    assert sup.nodes_lost == 0 and sup.nodes["old"]["alive"] is False
