"""Reference scores for the accuracy check, computed once per model and workload, then cached.

The reference is sentence-transformers `CrossEncoder.predict` on the same model directory
(fp32, batch size 32, `max_length` 512): the function every system claims to compute.
Computing it costs minutes on a large model, so it is kept on disk under a key made from
everything that could change it.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

from bench import agreement
from bench.fixtures import WORK
from bench.workload import Request

CACHE = WORK / "reference"


def scores(model_dir: Path, requests: list[Request], max_length: int) -> list[list[float]]:
    """One list of reference scores per request, in document order."""
    key = _key(model_dir, requests, max_length)
    path = CACHE / f"{model_dir.name}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    pairs = [pair for request in requests for pair in request.pairs()]
    flat = agreement.reference_scores(str(model_dir), pairs, max_length).tolist()
    result, start = [], 0
    for request in requests:
        result.append(flat[start : start + len(request.documents)])
        start += len(request.documents)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result), encoding="utf-8")
    return result


def _key(model_dir: Path, requests: list[Request], max_length: int) -> str:
    digest = hashlib.sha256()
    recipe = model_dir / "bench-recipe.json"
    digest.update(recipe.read_bytes() if recipe.is_file() else str(model_dir).encode())
    digest.update(version("sentence-transformers").encode())
    digest.update(str(max_length).encode())
    for request in requests:
        digest.update(json.dumps([request.query, request.documents]).encode())
    return digest.hexdigest()[:16]
