"""The Dockerfile and .dockerignore: hadolint, the image's shape, and its health check."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.deploy.conftest import REPO, settings_from_env, venv_tool
from tests.server import ServerProcess, free_port

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: str


def instructions() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, tagged by stage."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result, stage = [], "(global)"
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, flags=re.IGNORECASE)
            stage = match.group(1) if match else "(unnamed)"
        result.append(Instruction(keyword, args.strip(), stage))
    return result


def global_args() -> dict[str, str]:
    return {
        name: value
        for i in instructions()
        if i.keyword == "ARG" and i.stage == "(global)"
        for name, _, value in [i.args.partition("=")]
    }


def env_of(stage: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions():
        if i.keyword == "ENV" and i.stage == stage:
            env.update(dict(re.findall(r"(\w+)=(\S+)", i.args)))
    return env


def test_hadolint_passes() -> None:
    hadolint = venv_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stages_and_variants() -> None:
    froms = {i.stage: i.args for i in instructions() if i.keyword == "FROM"}
    assert {"build", "runtime", "variant-cpu", "variant-cuda", "final"} <= set(froms)
    assert froms["variant-cpu"].startswith("runtime ")
    assert froms["variant-cuda"].startswith("runtime ")
    assert froms["final"].startswith("variant-${VARIANT} ")
    assert global_args()["VARIANT"] == "cpu"
    # The base image is pinned to a patch release, never a floating tag.
    for stage in ("build", "runtime"):
        image = froms[stage].split()[0]
        if image.startswith("${"):
            image = global_args()[image[2:-1]]
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image


def rerankd_env(stage: str) -> dict[str, str]:
    return {k: v for k, v in env_of(stage).items() if k.startswith("RERANKD_")}


def test_each_variant_sets_valid_serving_defaults() -> None:
    base = rerankd_env("runtime")
    assert base == {"RERANKD_HOST": "0.0.0.0", "RERANKD_PORT": "8000"}
    cpu = settings_from_env({**base, **rerankd_env("variant-cpu")})
    assert (cpu.device, cpu.backend, cpu.dtype) == ("cpu", "onnx", "float32")
    cuda = settings_from_env({**base, **rerankd_env("variant-cuda")})
    assert (cuda.device, cuda.backend, cuda.dtype) == ("cuda", "torch", "float16")
    assert env_of("variant-cuda")["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_runtime_is_non_root_with_the_model_cache_on_a_volume() -> None:
    final = [i for i in instructions() if i.stage == "final"]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users  # numeric: k8s can check
    env = env_of("runtime")
    assert env["HF_HOME"].startswith("/data/") and env["XDG_CACHE_HOME"].startswith("/data/")
    keywords = [i.keyword for i in final]
    volume = keywords.index("VOLUME")
    assert json.loads(final[volume].args) == ["/data"]
    # The bake step runs before VOLUME: files written under a volume after it are discarded.
    bake = next(n for n, i in enumerate(final) if i.keyword == "RUN" and "BAKE_MODEL" in i.args)
    assert bake < volume
    assert "rerankd export --model" in final[bake].args
    assert [i.args for i in final if i.keyword == "ENTRYPOINT"] == ['["rerankd"]']
    assert [i.args for i in final if i.keyword == "CMD"] == ['["serve"]']


def healthcheck_command() -> list[str]:
    (check,) = [i.args for i in instructions() if i.keyword == "HEALTHCHECK"]
    assert "--start-period=" in check
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[0] == "python" and "/health" in command[-1]
    return [sys.executable, *command[1:]]


def test_healthcheck_passes_on_a_ready_server(rerankd: ServerProcess) -> None:
    port = rerankd.url.rsplit(":", 1)[1]
    result = subprocess.run(
        healthcheck_command(), env={"RERANKD_PORT": port}, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_without_a_server() -> None:
    result = subprocess.run(
        healthcheck_command(),
        env={"RERANKD_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode != 0


# .dockerignore ---------------------------------------------------------------------------


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parents, decides."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negated
    return excluded


def copy_sources() -> list[str]:
    sources = []
    for i in instructions():
        if i.keyword == "COPY" and "--from=" not in i.args:
            sources += i.args.split()[:-1]
    return sources


def test_the_build_context_holds_what_copy_needs() -> None:
    sources = copy_sources()
    assert {"pyproject.toml", "README.md", "rerankd"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignore_excludes("rerankd/api/app.py")


def test_the_build_copies_every_file_pip_needs() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = [project["readme"]] if isinstance(project.get("readme"), str) else []
    needed += project.get("license-files", [])
    for path in needed:
        assert path in copy_sources(), f"pyproject.toml needs {path}: COPY it in the Dockerfile"


@pytest.mark.parametrize(
    "path",
    [".git/config", ".venv/bin/python", "tests/test_api.py", "bench/results/x.json",
     "deploy/compose.yaml", "rerankd/__pycache__/cli.cpython-311.pyc", ".env"],
)  # fmt: skip
def test_the_build_context_leaves_out_the_rest(path: str) -> None:
    assert dockerignore_excludes(path)
