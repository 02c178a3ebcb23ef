"""Processes sharing Redis on the same weights, one ONNX int8, one fp32, one fp32 under another
config.json: each answers its own scores, never another's (the cache identity names the
settings files' hash, backend, dtype and int8 scheme)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
import redis

from rerankd import Reranker
from rerankd.engine import EngineOptions, bf16
from rerankd.engine.identity import cache_identity
from rerankd.families import bind_family, resolve
from rerankd.models import ModelSpec
from tests.server import run_server
from tests.test_redis import RedisServer

DOCS = [
    "the cat sat on the mat",
    "a quiet river runs through the old town",
    "stock prices fell sharply on monday",
    "the recipe needs two eggs and some flour",
    "mountains covered in snow all winter",
    "a short story about a lost dog",
]


def ask(url: str, query: str) -> dict:
    response = httpx.post(
        url + "/rerank",
        json={"query": query, "documents": DOCS, "raw_scores": True},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


def by_index(body: dict) -> list[float]:
    return [s for _, s in sorted((r["index"], r["score"]) for r in body["results"])]


def copy_model(model: Path, parent: Path, **config: object) -> Path:
    """`model` copied under `parent` with the same folder name (the served name), its
    config.json updated with `config`: the weights' hash alone cannot tell the two apart."""
    copy = parent / model.name
    shutil.copytree(model, copy)
    if config:
        settings = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**settings, **config}))
    return copy


def test_the_identity_is_keyed_by_the_settings_files_content_not_the_path(
    bert_model: Path, tmp_path: Path
) -> None:
    """Same weights, another config.json: another cache identity and bf16 verdict. The same
    files in another folder: the same ones (a content key, shared across hosts)."""
    moved = copy_model(bert_model, tmp_path / "moved")
    changed = copy_model(bert_model, tmp_path / "changed", hidden_act="relu")
    identities = {p: cache_identity(Reranker(p).engine) for p in (bert_model, moved, changed)}
    assert resolve(ModelSpec(str(changed))).revision == resolve(ModelSpec(str(bert_model))).revision
    assert identities[moved] == identities[bert_model]
    assert identities[changed] != identities[bert_model]

    options = EngineOptions(cache_dir=tmp_path / "cache")
    records = {
        p: bf16.record_path(bind_family(resolve(ModelSpec(str(p))), options), options)
        for p in (bert_model, moved, changed)
    }
    assert records[moved] == records[bert_model] != records[changed]


def test_int8_fp32_and_config_only_variant_sharing_redis_each_answer_their_own_scores(
    bert_model: Path, tmp_path: Path
) -> None:
    changed = copy_model(bert_model, tmp_path / "changed", hidden_act="relu")
    # fp32 without any cache, in this process (its export is the servers' too).
    reference = Reranker(bert_model, backend="onnx", cache_dir=tmp_path)
    expected_fp32 = reference.score([("which one is about animals", d) for d in DOCS], raw=True)
    del reference
    store = RedisServer(tmp_path)
    store.start()
    try:
        onnx = ["--backend", "onnx", "--cache-dir", str(tmp_path)]
        shared = ["--redis-url", store.url, "--cache-entries", "0"]
        model = ["--model", str(bert_model), *onnx, *shared]
        with (
            run_server([*model, "--dtype", "int8", "--force-int8"], log_dir=tmp_path) as q,
            run_server(model, log_dir=tmp_path) as f,
        ):
            int8 = ask(q.url, "which one is about animals")
            assert int8["usage"]["cached"] == 0
            assert redis.Redis(port=store.port).dbsize() == len(DOCS)
            fp32 = ask(f.url, "which one is about animals")
            assert fp32["usage"]["cached"] == 0, "the fp32 process ignores the int8 entries"
            assert by_index(fp32) == pytest.approx(list(expected_fp32), abs=1e-5)
            assert by_index(int8) != pytest.approx(by_index(fp32), abs=1e-6), "int8 really ran"
            # The same name and weights under another config.json: none of the fp32 entries.
            with run_server(["--model", str(changed), *onnx, *shared], log_dir=tmp_path) as c:
                relu = ask(c.url, "which one is about animals")
            assert relu["usage"]["cached"] == 0, "another config.json ignores the fp32 entries"
            assert redis.Redis(port=store.port).dbsize() == 3 * len(DOCS)
            assert by_index(relu) != pytest.approx(by_index(fp32), abs=1e-3), "relu really ran"
            # Each process does reuse its own entries.
            assert ask(f.url, "which one is about animals")["usage"]["cached"] == len(DOCS)
            again = ask(q.url, "which one is about animals")
            assert again["usage"]["cached"] == len(DOCS)
            assert by_index(again) == pytest.approx(by_index(int8), abs=1e-6)
    finally:
        store.kill()
