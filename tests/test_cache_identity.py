"""Two processes sharing Redis, one ONNX int8 and one fp32 on the same weights: each answers
its own scores, never the other's (the cache identity names backend, dtype and int8 scheme)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

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


def test_int8_and_fp32_processes_sharing_redis_each_answer_their_own_scores(
    bert_model: Path, tmp_path: Path
) -> None:
    store = RedisServer(tmp_path)
    store.start()
    try:
        onnx = ["--model", str(bert_model), "--backend", "onnx", "--cache-dir", str(tmp_path)]
        shared = ["--redis-url", store.url, "--cache-entries", "0"]
        with (
            run_server([*onnx, "--dtype", "int8", "--force-int8", *shared], log_dir=tmp_path) as q,
            run_server([*onnx, *shared], log_dir=tmp_path) as f,
        ):
            with run_server([*onnx], log_dir=tmp_path) as alone:  # fp32 without any cache
                expected_fp32 = by_index(ask(alone.url, "which one is about animals"))
            int8 = ask(q.url, "which one is about animals")
            assert int8["usage"]["cached"] == 0
            assert redis.Redis(port=store.port).dbsize() == len(DOCS)
            fp32 = ask(f.url, "which one is about animals")
            assert fp32["usage"]["cached"] == 0, "the fp32 process ignores the int8 entries"
            assert by_index(fp32) == pytest.approx(expected_fp32, abs=1e-5)
            assert by_index(int8) != pytest.approx(by_index(fp32), abs=1e-6), "int8 really ran"
            # Each process does reuse its own entries.
            assert ask(f.url, "which one is about animals")["usage"]["cached"] == len(DOCS)
            again = ask(q.url, "which one is about animals")
            assert again["usage"]["cached"] == len(DOCS)
            assert by_index(again) == pytest.approx(by_index(int8), abs=1e-6)
    finally:
        store.kill()
