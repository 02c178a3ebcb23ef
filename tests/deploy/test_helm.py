"""deploy/helm/rerankd: linted and rendered by Helm itself, and the same objects as kustomize.

Helm comes from PyPI: `helm-python-sdk` binds Helm's own Go SDK (v4) through its C library,
so `lint` and the offline render that `helm template` does are Helm's code, installed offline
like any wheel (Debian 12 has no helm package). Every rendered manifest is validated strictly
with kubernetes-validate for the oldest and newest Kubernetes release we target, then
compared object by object with what `kubectl kustomize` renders from deploy/k8s.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

import rerankd
from tests.deploy.conftest import DEPLOY, load_yaml, require, settings_from_env
from tests.deploy.test_k8s import KUBERNETES_VERSIONS, VARIANTS
from tests.deploy.test_k8s import render as render_kustomize

CHART = DEPLOY / "helm" / "rerankd"
RELEASE = "rerankd"
# Labels Helm charts add by convention (release, chart version); kustomize has no such thing.
HELM_ONLY_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}
# The seed's Xinference custom-rerank spec, as a registration.
REGISTRATION = {
    "model_name": "custom-bge-reranker-v2-m3",
    "type": "normal",
    "language": ["en", "zh", "multilingual"],
    "model_id": "BAAI/bge-reranker-v2-m3",
    "model_uri": "/data/models/bge-reranker-v2-m3",
}


def helm():
    try:
        import helm_python
    except ImportError:
        helm_python = None
    require(helm_python, "helm (the pip package helm-python-sdk)")
    return helm_python


def variant_values(variant: str) -> dict:
    return load_yaml(CHART / "values-gpu.yaml") if variant == "gpu" else {}


def merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(variant: str = "cpu", extra: dict | None = None) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(_render_text(variant, json.dumps(extra))) if doc]


@cache
def _render_text(variant: str, extra: str) -> str:
    values = merge(variant_values(variant), json.loads(extra) or {})
    manifests = (
        helm()
        .Chart.load(str(CHART))
        .render(values, name=RELEASE, namespace="rerankd", is_install=True)
    )
    return "\n---\n".join(
        text for path, text in sorted(manifests.items()) if path.endswith(".yaml")
    )


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}"
    return matches[0]


def objects(docs: list[dict]) -> list[dict]:
    return [doc for doc in docs if doc]


def server(docs: list[dict]) -> dict:
    return find(docs, "Deployment", "rerankd")


def container(docs: list[dict]) -> dict:
    (found,) = server(docs)["spec"]["template"]["spec"]["containers"]
    return found


def config(docs: list[dict]) -> dict[str, str]:
    return find(docs, "ConfigMap", "rerankd-config")["data"]


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


# Helm's own checks and the Kubernetes schemas ----------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_helm_lint_is_clean(variant: str, version: str) -> None:
    report = helm().lint(
        str(CHART), variant_values(variant), strict=True, kube_version=f"v{version}"
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert problems == [], problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_validates(variant: str, version: str) -> None:
    import kubernetes_validate

    docs = objects(render(variant, {"registrations": [REGISTRATION]}))
    assert len(docs) >= 10
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {error}")


def test_the_validator_is_not_vacuous() -> None:
    import kubernetes_validate

    deployment = server(render())
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# The same objects as kustomize --------------------------------------------------------------


def _comparable(node: object) -> object:
    """Drop Helm's conventional labels and checksums; kustomize's hashed ConfigMap name too."""
    if isinstance(node, dict):
        return {
            key: _comparable(value)
            for key, value in node.items()
            if key not in HELM_ONLY_LABELS and not str(key).startswith("checksum/")
        }
    if isinstance(node, list):
        return [_comparable(item) for item in node]
    if isinstance(node, str):
        return re.sub(r"^rerankd-config-[a-z0-9]{10}$", "rerankd-config", node)
    return node


def comparable(doc: dict) -> dict:
    """An object without its metadata (comments, labels, generated names), as kustomize has it."""
    body = {key: value for key, value in doc.items() if key != "metadata"}
    if doc["kind"] == "Secret":  # kustomize ships a placeholder, the chart a generated key
        body = {
            "type": doc["type"],
            "keys": sorted({**doc.get("data", {}), **doc.get("stringData", {})}),
        }
    if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "rerankd":
        body["spec"] = {k: v for k, v in body["spec"].items() if k != "replicas"}  # the HPA's
    name = re.sub(r"^rerankd-config-[a-z0-9]{10}$", "rerankd-config", doc["metadata"]["name"])
    return {"name": name, **_comparable(body)}  # type: ignore[dict-item]


def test_the_same_objects_as_the_kustomize_overlay(variant: str) -> None:
    chart = {(d["kind"], comparable(d)["name"]): comparable(d) for d in objects(render(variant))}
    kustomize = {
        (d["kind"], comparable(d)["name"]): comparable(d) for d in render_kustomize(variant)
    }
    assert sorted(chart) == sorted(kustomize)
    for key, expected in kustomize.items():
        assert chart[key] == expected, key


def test_settings_build_valid_rerankd_settings(variant: str) -> None:
    docs = render(variant)
    settings = settings_from_env({**config(docs), "RERANKD_HOST": "0.0.0.0"})
    limits = container(docs)["resources"]["limits"]
    if variant == "cpu":
        assert (settings.device, settings.backend, settings.threads) == ("cpu", "onnx", 4)
        assert settings.threads == int(limits["cpu"])
    else:
        assert (settings.device, settings.dtype, settings.threads) == ("cuda", "float16", None)
        assert "cpu" not in limits and limits["nvidia.com/gpu"] == 1
    assert settings.redis_url == "redis://rerankd-redis:6379/0"
    assert str(settings.api_keys_file) == "/etc/rerankd/secrets/api-keys"


def test_the_chart_and_image_follow_rerankds_version(variant: str) -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["appVersion"] == chart["version"] == rerankd.__version__
    flavor = {"cpu": "cpu", "gpu": "cuda"}[variant]
    assert container(render(variant))["image"] == f"rerankd:{rerankd.__version__}-{flavor}"


# What the values change ------------------------------------------------------------------------


def secret_keys(docs: list[dict]) -> str:
    encoded = find(docs, "Secret", "rerankd-api-keys")["data"]["api-keys"]
    return base64.b64decode(encoded).decode()


def test_api_keys_given_generated_or_from_an_existing_secret() -> None:
    keys = ["first-key-0123456789", "second-key-0123456789"]
    assert secret_keys(render(extra={"apiKeys": {"keys": keys}})) == "\n".join(keys) + "\n"
    generated = secret_keys(render())
    assert re.fullmatch(r"[A-Za-z0-9]{40}\n", generated)  # never a placeholder
    docs = objects(render(extra={"apiKeys": {"existingSecret": "my-keys"}}))
    assert not [d for d in docs if d["kind"] == "Secret"]
    volumes = server(docs)["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "api-keys",
        "secret": {"secretName": "my-keys", "defaultMode": 0o440},
    } in volumes
    docs = render(extra={"apiKeys": {"enabled": False}})
    assert "RERANKD_API_KEYS_FILE" not in config(docs)
    assert "api-keys" not in {m["name"] for m in container(docs)["volumeMounts"]}


def test_redis_is_optional_or_external() -> None:
    def redis_objects(docs: list[dict]) -> list[str]:
        return [d["kind"] for d in objects(docs) if d["metadata"]["name"] == "rerankd-redis"]

    assert sorted(redis_objects(render())) == ["Deployment", "NetworkPolicy", "Service"]
    assert find(render(), "PersistentVolumeClaim", "rerankd-redis-data")
    docs = render(extra={"redis": {"enabled": False}})
    assert redis_objects(docs) == [] and "RERANKD_REDIS_URL" not in config(docs)
    docs = render(extra={"redis": {"url": "redis://cache.example.internal:6380/2"}})
    assert redis_objects(docs) == []
    assert config(docs)["RERANKD_REDIS_URL"] == "redis://cache.example.internal:6380/2"


def test_registrations_become_a_mounted_config_map_file() -> None:
    plain = render()
    assert "RERANKD_REGISTRATIONS_FILE" not in config(plain)
    docs = render(extra={"registrations": [REGISTRATION]})
    stored = find(docs, "ConfigMap", "rerankd-registrations")["data"]["registrations.json"]
    assert json.loads(stored) == [REGISTRATION]
    path = Path(config(docs)["RERANKD_REGISTRATIONS_FILE"])
    assert path.name == "registrations.json"
    mount = next(m for m in container(docs)["volumeMounts"] if m["mountPath"] == str(path.parent))
    assert mount["readOnly"] is True
    volume = next(
        v for v in server(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == "rerankd-registrations"
    # A new registration rolls the pods.
    annotations = server(docs)["spec"]["template"]["metadata"]["annotations"]
    before = server(plain)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/registrations"] != before["checksum/registrations"]
    from rerankd.config import Settings

    if "registrations_file" in Settings.model_fields:  # once the registry reads the file
        settings = settings_from_env(config(docs))
        assert settings.registrations_file == path


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"redis": {"enable": False}}, "'enable' not allowed"),
        ({"settings": {"MODEL": "builtin"}}, "'MODEL' does not match"),
        ({"apiKeys": {"keys": ["short"]}}, "minLength"),
        ({"image": {"flavor": "rocm"}}, "/image/flavor"),
    ],
)
def test_the_values_schema_catches_mistakes(values: dict, complaint: str) -> None:
    report = helm().lint(str(CHART), values, strict=True)
    errors = " ".join(m["error"] for m in report["messages"] if m["severity"] >= 3)
    assert complaint in errors, report


def test_a_changed_setting_rolls_the_pods() -> None:
    before = server(render())["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = render(extra={"settings": {"RERANKD_LOG_LEVEL": "debug"}})
    after = server(changed)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert before != after and config(changed)["RERANKD_LOG_LEVEL"] == "debug"


def test_another_release_name_prefixes_every_object() -> None:
    manifests = helm().Chart.load(str(CHART)).render({}, name="search", namespace="rag")
    docs = objects(
        [
            doc
            for path, text in manifests.items()
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
        ]
    )
    assert {d["metadata"]["name"] for d in docs} == {
        "search-rerankd", "search-rerankd-config", "search-rerankd-api-keys", "search-rerankd-redis",
        "search-rerankd-redis-data", "search-rerankd-model-cache",
    }  # fmt: skip
    deployment = find(docs, "Deployment", "search-rerankd")
    envfrom = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert envfrom == [{"configMapRef": {"name": "search-rerankd-config"}}]
    redis_url = find(docs, "ConfigMap", "search-rerankd-config")["data"]["RERANKD_REDIS_URL"]
    assert redis_url == "redis://search-rerankd-redis:6379/0"
