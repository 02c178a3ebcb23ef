"""deploy/compose.yaml: the compose specification's schema, pinned images, and wiring."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlparse

import pytest

import rerankd
from tests.deploy.conftest import DEPLOY, load_yaml, settings_from_env, venv_tool

COMPOSE = DEPLOY / "compose.yaml"
RERANKD_SERVICES = {"rerankd-gpu": "cuda", "rerankd-cpu": "cpu"}


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` and `${VAR}` with an empty environment."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)  # PyYAML resolves the `<<:` merge keys, as compose does


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_validates_against_the_compose_specification() -> None:
    checker = venv_tool("check-jsonschema")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_image_is_pinned_to_a_version(compose: dict) -> None:
    for name, service in compose["services"].items():
        image = interpolate(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_rerankd_images_are_this_version_and_variant(compose: dict) -> None:
    for name, variant in RERANKD_SERVICES.items():
        service = compose["services"][name]
        assert service["image"] == f"rerankd:{rerankd.__version__}-{variant}"
        assert service["build"]["args"]["VARIANT"] == variant
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_rerankd_services_run_the_way_the_docs_say(compose: dict) -> None:
    services = compose["services"]
    drain = settings_from_env({}).drain_seconds
    for name, variant in RERANKD_SERVICES.items():
        service = services[name]
        assert service["profiles"] == [variant.replace("cuda", "gpu")]
        assert "rerankd" in service["networks"]["default"]["aliases"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert seconds(service["stop_grace_period"]) >= drain + 10
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "healthcheck" not in service  # the image's HEALTHCHECK on /health applies
        mounts = [v.split(":") for v in service["volumes"]]
        assert ["rerankd-data", "/data"] in mounts and "rerankd-data" in compose["volumes"]
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        settings = settings_from_env(env)
        assert settings.devices[0].startswith(variant)
        assert settings.model == ["BAAI/bge-reranker-v2-m3"]
        redis = urlparse(settings.redis_url)
        assert redis.hostname in services and redis.port == 6379
    gpu = services["rerankd-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in services["rerankd-cpu"]


def test_bind_mounts_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_and_grafana_point_at_compose_services(compose: dict) -> None:
    services = compose["services"]
    names = set(services) | {
        alias
        for service in services.values()
        for alias in (service.get("networks") or {}).get("default", {}).get("aliases", [])
    }
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    for job in prometheus["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in names | {"localhost"}, target
                if job["job_name"] == "rerankd":
                    assert int(port) == settings_from_env({"RERANKD_PORT": "8000"}).port
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    for pattern in prometheus["rule_files"]:
        directory = pattern.rsplit("/", 1)[0]
        host = next(h for h, c in mounts.items() if c == directory)
        assert list((DEPLOY / host).glob(pattern.rsplit("/", 1)[1])), pattern

    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    for source in datasources["datasources"]:
        assert urlparse(source["url"]).hostname in services
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/rerankd.yml")
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    dashboard_path = grafana_mounts["./grafana/rerankd.json"]
    assert dashboard_path.rsplit("/", 1)[0] == providers["providers"][0]["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == dashboard_path
