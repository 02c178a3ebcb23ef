"""The systems rerankd is compared with, installed the way their users install them.

Infinity lives in its own virtual environment (`bench/.venv-infinity`): it pins its own
transformers and sentence-transformers, which must not leak into rerankd's. torch is
installed first and pinned, so nothing pulls a multi-gigabyte CUDA build.

Xinference (4.1, the seed's own platform) lives in `bench/.venv-xinference`: torch first, then
`xinference[transformers]` and `sentence-transformers<6` with torch held; PyPI's torchvision needs
a CUDA torch (its operators fail to load next to the CPU build), so it is removed afterwards. A
model directory is served as its users serve a custom model: `xinference-local`, then `xinference
register` of a rerank spec naming the directory, then `xinference launch --device cpu`.

Infinity's optimum engine does not export models itself: it needs ONNX files in the model
directory. As its users do, we export with `optimum-cli export onnx` (fp32) and quantize
with `optimum-cli onnxruntime quantize --avx2` (int8), into a copy of the model directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.fixtures import WORK

BENCH = Path(__file__).resolve().parent
INFINITY_VENV = BENCH / ".venv-infinity"
INFINITY_VERSION = "0.0.78"
TORCH_VERSION = "2.13.0"
INFINITY_REQUIREMENT = f"infinity-emb[server,torch,optimum]=={INFINITY_VERSION}"
OPTIMUM_DIRS = WORK / "infinity-onnx"
XINFERENCE_VENV = BENCH / ".venv-xinference"
XINFERENCE_VERSION = "4.1.0"
XINFERENCE_REQUIREMENTS = [
    f"xinference[transformers]=={XINFERENCE_VERSION}",
    "sentence-transformers<6",
]


def offline_env() -> dict[str, str]:
    """Environment for every peer: no hub, no telemetry, caches inside bench/.work."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(WORK / "hf"),
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "XINFERENCE_AUTH_ADVANCED": "0",
        "XINFERENCE_HOME": str(WORK / "xinference"),
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def infinity_bin(name: str) -> Path:
    return INFINITY_VENV / "bin" / name


def ensure_infinity_venv() -> Path:
    """Create and fill Infinity's venv once; later calls only check it."""
    stamp = INFINITY_VENV / f".installed-{INFINITY_VERSION}"
    if stamp.is_file():
        return INFINITY_VENV
    python = infinity_bin("python")
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, INFINITY_REQUIREMENT], check=True)
    stamp.touch()
    return INFINITY_VENV


def infinity_command(
    model_dir: Path, engine: str, port: int, *, quantized: bool = False
) -> list[str]:
    """`infinity_emb v2` for one local model on the CPU, with its defaults otherwise.

    `--no-compile`: on CPU its default `torch.compile(dynamic=True)` recompiles for every new
    shape (each batch length), which costs minutes, not speed. For the optimum engine,
    `quantized` picks the int8 file it prefers on CPU; otherwise it is told to take fp32.
    The optimum engine must be started inside the model directory with `--model-id .`
    (see `infinity_cwd`).
    """
    command = [
        str(infinity_bin("infinity_emb")),
        "v2",
        "--model-id",
        "." if engine == "optimum" else str(model_dir),
        "--served-model-name",
        model_dir.name,
        "--engine",
        engine,
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-compile",
    ]
    if engine == "optimum" and not quantized:
        command.append("--onnx-do-not-prefer-quantized")
    return command


def infinity_cwd(model_dir: Path, engine: str) -> Path | None:
    """Where to start Infinity: inside the model directory for its optimum engine.

    Infinity 0.0.78 hands optimum the ONNX file's path as found by globbing the model
    directory (`DIR/model.onnx`); optimum 2.x wants a name inside the directory and fails
    with "Could not find any ONNX files". Globbing `.` yields bare names, which work.
    """
    return model_dir if engine == "optimum" else None


def ensure_optimum_dir(model_dir: Path) -> Path:
    """A copy of `model_dir` with `model.onnx` and `model_quantized.onnx` for Infinity."""
    out = OPTIMUM_DIRS / model_dir.name
    if (out / "model.onnx").is_file() and (out / "model_quantized.onnx").is_file():
        return out
    ensure_infinity_venv()
    tmp = OPTIMUM_DIRS / f".{model_dir.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cli = str(infinity_bin("optimum-cli"))
    env = offline_env()
    subprocess.run(
        [
            cli,
            "export",
            "onnx",
            "--model",
            str(model_dir),
            "--task",
            "text-classification",
            str(tmp),
        ],
        check=True,
        env=env,
    )
    quantized = tmp / "quantized"
    subprocess.run(
        [cli, "onnxruntime", "quantize", "--onnx_model", str(tmp), "--avx2", "-o", str(quantized)],
        check=True,
        env=env,
    )
    shutil.move(str(quantized / "model_quantized.onnx"), tmp / "model_quantized.onnx")
    shutil.rmtree(quantized)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def xinference_bin(name: str) -> Path:
    return XINFERENCE_VENV / "bin" / name


def ensure_xinference_venv() -> Path:
    """Create and fill Xinference's venv once (torch held, torchvision removed)."""
    stamp = XINFERENCE_VENV / f".installed-{XINFERENCE_VERSION}"
    if stamp.exists():
        return XINFERENCE_VENV
    python = xinference_bin("python")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(XINFERENCE_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    held = XINFERENCE_VENV / "constraints.txt"
    held.write_text(f"torch=={TORCH_VERSION}\n", encoding="utf-8")
    subprocess.run([*pip, "-c", str(held), *XINFERENCE_REQUIREMENTS], check=True)
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"])
    stamp.touch()
    return XINFERENCE_VENV


def xinference_command(model_dir: Path, port: int) -> list[str]:
    """`xinference-local` on loopback; the model is registered and launched once it is up."""
    ensure_xinference_venv()
    return [str(xinference_bin("xinference-local")), "--host", "127.0.0.1", "--port", str(port)]


def xinference_launch(url: str, model_dir: Path) -> str:
    """Register `model_dir` as a custom rerank model and launch it on the CPU; its uid."""
    name = f"bench-{model_dir.name}"
    spec = {
        "version": 2,
        "model_name": name,
        "type": "normal",  # a cross-encoder, run by sentence-transformers' CrossEncoder
        "language": ["en", "zh"],
        "max_tokens": 512,
        "model_specs": [
            {"model_format": "pytorch", "model_uri": str(model_dir), "quantization": "none"}
        ],
        "virtualenv": None,
    }
    spec_file = WORK / "xinference" / f"{name}.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    cli = [str(xinference_bin("xinference"))]
    env = offline_env()
    subprocess.run(  # a spec kept from an earlier run is replaced, not an error
        [*cli, "unregister", "-e", url, "--model-type", "rerank", "--model-name", name],
        env=env,
        capture_output=True,
    )
    register = [*cli, "register", "-e", url, "--model-type", "rerank", "--file", str(spec_file)]
    subprocess.run(register, env=env, check=True, capture_output=True)
    launch = [*cli, "launch", "-e", url, "--model-type", "rerank", "--model-name", name]
    launch += ["--model-uid", name, "--model-engine", "sentence_transformers", "--device", "cpu"]
    subprocess.run(launch, env=env, check=True, capture_output=True, timeout=900)
    return name
