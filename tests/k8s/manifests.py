"""Rendering and reading the Kubernetes manifests under k8s/ (shared by the k8s tests)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# the upstream CRDs, vendored beside these tests (schemas/SOURCES.md says where each comes from)
SCHEMAS = Path(__file__).resolve().parent / "schemas"
TARGETS = ("base", "overlays/cpu-dev", "overlays/gpu-prod", "overlays/gpu-prod-redis-cluster")
DASHBOARD = K8S / "base" / "dashboards" / "streamdycoke.json"

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="renders Kustomize with `kubectl kustomize` (make test installs kubectl)")


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    """``kubectl kustomize k8s/<target>`` (offline: no cluster involved), as a tuple of objects."""
    out = subprocess.run(["kubectl", "kustomize", str(K8S / target)], capture_output=True, text=True, check=True)
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def redis_workload(docs) -> dict:
    """The token cache's workload: one Redis pod (Deployment) or a Redis Cluster (StatefulSet)."""
    (w,) = find(docs, "Deployment", "streamdycoke-redis") + find(docs, "StatefulSet", "streamdycoke-redis")
    return w


def serve_config(docs) -> dict:
    (rs,) = find(docs, "RayService")
    return yaml.safe_load(rs["spec"]["serveConfigV2"])


def alert_rules(docs) -> list[dict]:
    return [r for pr in find(docs, "PrometheusRule") for g in pr["spec"]["groups"] for r in g["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the Grafana dashboard, template variables filled in."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], fill_variables(t["expr"])))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["definition"].replace("label_values(", "group by (camera) (")
                        .replace(", camera)", ")")))
    return out


def fill_variables(expr: str, rate_interval: str = "1m") -> str:
    return expr.replace('"$camera"', '".*"').replace("$__rate_interval", rate_interval)


_METRIC = re.compile(r"\b((?:ray_)?streamdycoke_[a-z0-9_]+|ray_serve_[a-z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


# CRD schemas -----------------------------------------------------------------------------------------
def _strict(schema):
    """A CRD's openAPIV3Schema made Draft-4-ready and strict: ``x-kubernetes-*`` keys removed, and every
    object that declares its properties (and does not preserve unknown fields) closed to others, as
    the API server's pruning and ``kubectl --validate=strict`` treat them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD we were given."""
    out = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                if v.get("served"):
                    schema = _strict(v["schema"]["openAPIV3Schema"])
                    # metadata is the API server's, checked by kubernetes-validate's ObjectMeta elsewhere
                    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                    out[(f"{group}/{v['name']}", kind)] = schema
    return out
