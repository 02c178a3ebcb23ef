"""Helpers the registry tests share: the seed's spec pointed at a test model, admin calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

SEED_SPEC = Path(__file__).parent / "data" / "custom-bge-reranker-v2-m3.json"
SEED_NAME = "custom-bge-reranker-v2-m3"


def seed_spec(model_dir: Path, **changes: object) -> dict:
    """The seed tutorial's spec as it is, with `model_uri` pointing at a test model."""
    spec = json.loads(SEED_SPEC.read_text(encoding="utf-8"))
    return {**spec, "model_uri": str(model_dir), **changes}


def register(
    url: str, spec: dict, *, persist: bool = False, key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": json.dumps(spec), "persist": persist}
    return httpx.post(
        f"{url}/v1/model_registrations/rerank", json=body, headers=headers, timeout=60
    )


def launch(url: str, name: str, *, key: str | None = None, **options: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model_name": name, "model_type": "rerank", **options}
    return httpx.post(f"{url}/v1/models", json=body, headers=headers, timeout=300)


def rerankd_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "rerankd", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
