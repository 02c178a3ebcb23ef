"""Scaling a fleet: nothing fights the autoscaler, queue-depth autoscaling through KEDA or the
Prometheus Adapter validates against their real schemas, Redis keeps the registry on a
volume, and new pods share one model cache.

The schemas are in tests/deploy/schemas (no network here): KEDA's ScaledObject is the
openAPIV3Schema of KEDA's own CRD; the Prometheus Adapter's configuration schema is written
from its Go types (the adapter reads the file with yaml.UnmarshalStrict). Each is shown to
refuse a broken object, so the checks are not vacuous.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO
from tests.deploy.test_helm import find, objects, render
from tests.deploy.test_k8s import VARIANTS
from tests.deploy.test_k8s import render as render_kustomize

SCHEMAS = Path(__file__).parent / "schemas"
KEDA = {"autoscaling": {"engine": "keda"}}


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def validate_scaled_object(doc: dict) -> None:
    jsonschema.validate(doc, schema("keda-scaledobject-v1alpha1.json"))
    # The prometheus scaler's required metadata (pkg/scalers/prometheus_scaler.go), which the
    # CRD types only as a string map.
    for trigger in doc["spec"]["triggers"]:
        if trigger["type"] == "prometheus":
            assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
            float(trigger["metadata"]["threshold"])


def adapter_config(docs: list[dict]) -> dict:
    config_map = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("adapter")
    )
    return yaml.safe_load(config_map["data"]["config.yaml"])


def validate_adapter_config(config: dict) -> None:
    jsonschema.validate(config, schema("prometheus-adapter-config.json"))
    for rule in config["rules"]:
        re.compile(rule["name"]["matches"])
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]


def metric_names() -> set[str]:
    source = (REPO / "rerankd" / "metrics.py").read_text(encoding="utf-8")
    return set(re.findall(r'"(rerankd_[a-z_]+)"', source))


# No replicas on a Deployment an autoscaler owns ----------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_replicas_on_the_deployment_the_hpa_owns(variant: str) -> None:
    for docs in (render_kustomize(variant), objects(render(variant))):
        assert "replicas" not in find(docs, "Deployment", "rerankd")["spec"]
        assert find(docs, "HorizontalPodAutoscaler", "rerankd")["spec"]["minReplicas"] >= 2
    keda = objects(render(variant, KEDA))
    assert "replicas" not in find(keda, "Deployment", "rerankd")["spec"]
    fixed = objects(render(variant, {"autoscaling": {"enabled": False}, "replicaCount": 3}))
    assert find(fixed, "Deployment", "rerankd")["spec"]["replicas"] == 3


# KEDA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_scales_on_queue_tokens_and_validates(variant: str) -> None:
    docs = objects(render(variant, KEDA))
    kinds = {d["kind"] for d in docs}
    assert "HorizontalPodAutoscaler" not in kinds, "KEDA makes its own HPA: not two"
    scaled = find(docs, "ScaledObject", "rerankd")
    validate_scaled_object(scaled)
    assert scaled["spec"]["scaleTargetRef"]["name"] == "rerankd"
    (prometheus,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    query = prometheus["metadata"]["query"]
    assert "rerankd_queue_tokens" in query and "rerankd_queue_tokens" in metric_names()
    assert 'namespace="rerankd"' in query and 'pod=~"rerankd-.*"' in query
    assert scaled["spec"]["minReplicaCount"] >= 2


def test_the_keda_schema_is_not_vacuous() -> None:
    scaled = find(objects(render("cpu", KEDA)), "ScaledObject", "rerankd")
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate_scaled_object(broken)
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 16384  # not a string
    with pytest.raises(jsonschema.ValidationError):
        validate_scaled_object(broken)


# The Prometheus Adapter --------------------------------------------------------------------


def test_the_adapter_rule_validates_where_the_hpa_uses_queue_tokens() -> None:
    gpu_chart = objects(render("gpu"))
    gpu_kustomize = render_kustomize("gpu")
    for docs in (gpu_chart, gpu_kustomize):
        config = adapter_config(docs)
        validate_adapter_config(config)
        served = {rule["name"]["as"] for rule in config["rules"]}
        (metric,) = find(docs, "HorizontalPodAutoscaler", "rerankd")["spec"]["metrics"]
        assert metric["pods"]["metric"]["name"] in served
    assert adapter_config(gpu_chart) == adapter_config(gpu_kustomize)
    cpu = objects(render("cpu", {"prometheusAdapter": {"rules": True}}))
    validate_adapter_config(adapter_config(cpu))
    assert not any(d["metadata"]["name"].endswith("adapter") for d in objects(render("cpu")))


def test_the_adapter_schema_is_not_vacuous() -> None:
    config = adapter_config(objects(render("gpu")))
    config["rules"][0]["metricQuery"] = config["rules"][0].pop("metricsQuery")  # a typo
    with pytest.raises(jsonschema.ValidationError):
        validate_adapter_config(config)


# Redis keeps the registry ------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_redis_keeps_an_append_only_file_on_a_volume(variant: str) -> None:
    for docs in (render_kustomize(variant), objects(render(variant))):
        redis = find(docs, "Deployment", "rerankd-redis")
        args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        options = dict(zip(args[::2], args[1::2], strict=True))
        assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
        # Only keys with a TTL may be evicted: registrations and launches have none.
        assert options["--maxmemory-policy"] == "volatile-lru"
        assert redis["spec"]["strategy"]["type"] == "Recreate"
        (volume,) = redis["spec"]["template"]["spec"]["volumes"]
        claim = volume["persistentVolumeClaim"]["claimName"]
        pvc = find(docs, "PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        mount = redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
        assert mount["mountPath"] == options["--dir"]


# One model cache for every pod ---------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    return dict(re.findall(r"\b(HF_HOME|XDG_CACHE_HOME)=(\S+)", text))


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_share_the_model_and_onnx_cache(variant: str) -> None:
    env = dockerfile_env()
    assert set(env) == {"HF_HOME", "XDG_CACHE_HOME"}
    for docs in (render_kustomize(variant), objects(render(variant))):
        pod = find(docs, "Deployment", "rerankd")["spec"]["template"]["spec"]
        (shared,) = [v for v in pod["volumes"] if v["name"] == "model-cache"]
        pvc = find(docs, "PersistentVolumeClaim", shared["persistentVolumeClaim"]["claimName"])
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        mounts = {
            m["mountPath"]
            for m in pod["containers"][0]["volumeMounts"]
            if m["name"] == "model-cache"
        }
        assert mounts == set(env.values()), "weights and ONNX exports both on the shared volume"
    docs = objects(render("cpu", {"modelCache": {"existingClaim": "models-nfs"}}))
    pod = find(docs, "Deployment", "rerankd")["spec"]["template"]["spec"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models-nfs"}} in pod[
        "volumes"
    ]
    assert not [
        d for d in docs if d["kind"] == "PersistentVolumeClaim" and "model" in d["metadata"]["name"]
    ]
    docs = objects(render("cpu", {"modelCache": {"enabled": False}}))
    pod = find(docs, "Deployment", "rerankd")["spec"]["template"]["spec"]
    assert "model-cache" not in {v["name"] for v in pod["volumes"]}


def test_the_compose_stack_redis_keeps_its_file_too() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    command = " ".join(str(part) for part in compose["services"]["redis"].get("command", []))
    assert "--appendonly yes" in command
