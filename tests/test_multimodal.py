"""Images as documents and queries with tiny CLIP and SigLIP models, on a real server.

The models are built from configs with seeded random weights, a tokenizer trained here and a
real image-processor config; the images are made with Pillow. Scores are checked against
transformers' `get_text_features` / `get_image_features` on the same weights.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from rerankd.errors import UnsupportedModel
from tests.imaging import b64, bomb, data_url, png, truncated_png
from tests.server import ServerProcess, run_server
from tests.test_serving import metric

QUERY = "a photo of a red square"
CAPTIONS = ["a red square on blue", "a cat sleeping on a sofa", "a scanned page from a manual"]
PATCHES = {"clip": 16 + 1, "siglip": 16}  # 32-pixel images, 8-pixel patches; CLIP's class token


@pytest.fixture(scope="module")
def clip_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_vision import build_clip

    return build_clip(model_root / "tiny-clip")


@pytest.fixture(scope="module")
def siglip_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_vision import build_siglip

    return build_siglip(model_root / "tiny-siglip")


@pytest.fixture(scope="module")
def server(
    clip_model: Path, siglip_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = [
        *("--model", f"{clip_model}=clip", "--model", f"{siglip_model}=siglip"),
        *("--model", "builtin", "--max-body-bytes", str(1 << 20)),
        *("--max-image-bytes", str(200_000), "--max-image-pixels", str(4_000_000)),
    ]
    with run_server(args, log_dir=tmp_path_factory.mktemp("multimodal")) as running:
        yield running


def _reference(
    path: Path, family: str, query: str | bytes, documents: list[str | bytes]
) -> list[float]:
    """Raw scores the transformers way: features, L2-normalised, cosine (SigLIP: its logit)."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    processor = AutoImageProcessor.from_pretrained(str(path))
    padding = (
        {"padding": "max_length", "max_length": 64} if family == "siglip" else {"padding": True}
    )

    def embed(item: str | bytes) -> torch.Tensor:
        with torch.no_grad():
            if isinstance(item, bytes):
                image = Image.open(io.BytesIO(item)).convert("RGB")
                out = model.get_image_features(**processor(images=[image], return_tensors="pt"))
            else:
                tokens = tokenizer([item], truncation=True, return_tensors="pt", **padding)
                if family == "siglip":
                    tokens = {"input_ids": tokens["input_ids"]}
                out = model.get_text_features(**tokens)
        features = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(features, dim=-1)[0].double()

    q = embed(query)
    cosines = [float(embed(d) @ q) for d in documents]
    if family == "clip":
        return cosines
    scale, bias = float(model.logit_scale.detach().exp()), float(model.logit_bias.detach())
    return [scale * c + bias for c in cosines]


def _wire(item: str | bytes) -> str | dict[str, str]:
    return {"image": b64(item)} if isinstance(item, bytes) else item


def _scores(
    server: ServerProcess, model: str, query: str | bytes, documents: list, **extra
) -> dict[int, float]:
    body = {
        "model": model,
        "query": _wire(query),
        "documents": [_wire(d) for d in documents],
        "raw_scores": True,
        **extra,
    }
    response = httpx.post(server.url + "/rerank", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return {r["index"]: r["score"] for r in response.json()["results"]}


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_scores_equal_transformers_for_text_and_image_queries(
    server: ServerProcess, clip_model: Path, siglip_model: Path, family: str
) -> None:
    path = clip_model if family == "clip" else siglip_model
    documents: list[str | bytes] = [png(1), CAPTIONS[0], png(2), CAPTIONS[1], png(3)]
    for query in (QUERY, png(7)):
        ours = _scores(server, family, query, documents)
        expected = _reference(path, family, query, documents)
        assert [ours[i] for i in range(len(documents))] == pytest.approx(expected, abs=1e-5)


def test_normalised_scores_are_the_documented_maps(server: ServerProcess) -> None:
    documents = [{"image": b64(png(1))}, CAPTIONS[0]]
    for model, expected in (
        ("clip", lambda raw: (raw + 1) / 2),
        ("siglip", lambda raw: 1 / (1 + np.exp(-raw))),
    ):
        body = {"model": model, "query": QUERY, "documents": documents}
        raw = _scores(server, model, QUERY, [png(1), CAPTIONS[0]])
        normal = httpx.post(server.url + "/rerank", json=body, timeout=60).json()["results"]
        for result in normal:
            assert result["score"] == pytest.approx(expected(raw[result["index"]]), abs=1e-9)


def test_a_mixed_request_ranks_as_its_parts_scored_apart(server: ServerProcess) -> None:
    texts, images = CAPTIONS, [png(11), png(12), png(13)]
    mixed = _scores(server, "clip", "a drawing of a circle", [*texts, *images])
    only_texts = _scores(server, "clip", "a drawing of a circle", texts)
    only_images = _scores(server, "clip", "a drawing of a circle", images)
    apart = [only_texts[i] for i in range(3)] + [only_images[i] for i in range(3)]
    assert [mixed[i] for i in range(6)] == pytest.approx(apart, abs=1e-6)
    assert sorted(mixed, key=lambda i: -mixed[i]) == sorted(range(6), key=lambda i: -apart[i])


def _images_encoded(server: ServerProcess, model: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return metric(text, "rerankd_embedded_total", f'kind="image",model="{model}"')


def test_an_image_is_encoded_once_and_then_served_from_the_embedding_cache(
    server: ServerProcess,
) -> None:
    images = [png(21), png(22), png(21), png(23)]  # 21 twice
    before = _images_encoded(server, "siglip")
    body = {"model": "siglip", "query": "first query", "documents": [_wire(i) for i in images]}
    first = httpx.post(server.url + "/rerank", json=body, timeout=60).json()
    assert _images_encoded(server, "siglip") - before == 3  # the repeated image once
    scores = {r["index"]: r["score"] for r in first["results"]}
    assert scores[0] == scores[2]
    assert first["usage"]["tokens"] == 3 * PATCHES["siglip"] + 64  # and the query, padded

    second = httpx.post(
        server.url + "/rerank", json={**body, "query": "a different query"}, timeout=60
    ).json()
    assert _images_encoded(server, "siglip") - before == 3, "no image encoded again"
    assert second["usage"]["cached"] == 3
    assert second["usage"]["tokens"] == 64  # only the new query: SigLIP pads texts to 64


def test_an_image_costs_its_patches_in_the_batch_budget(server: ServerProcess) -> None:
    body = {
        "model": "clip",
        "query": {"image": b64(png(31))},
        "documents": [{"image": b64(png(32))}, {"image": data_url(png(33))}],
    }
    usage = httpx.post(server.url + "/rerank", json=body, timeout=60).json()["usage"]
    assert usage["tokens"] == 3 * PATCHES["clip"]


def test_jina_and_vllm_shapes_give_the_same_scores(server: ServerProcess) -> None:
    images = [png(41), png(42)]
    jina = httpx.post(
        server.url + "/v1/rerank",
        json={
            "model": "clip",
            "query": QUERY,
            "documents": [
                {"image": data_url(images[0])},
                {"text": CAPTIONS[0]},
                {"image": b64(images[1])},
            ],
            "return_documents": True,
        },
        timeout=60,
    )
    vllm = httpx.post(
        server.url + "/v2/rerank",
        json={
            "model": "clip",
            "query": {"content": [{"type": "text", "text": QUERY}]},
            "documents": {
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(images[0])}},
                    {"type": "text", "text": CAPTIONS[0]},
                    {"type": "image_url", "image_url": {"url": data_url(images[1])}},
                ]
            },
        },
        timeout=60,
    )
    assert jina.status_code == vllm.status_code == 200, (jina.text, vllm.text)
    by_jina = {r["index"]: r for r in jina.json()["results"]}
    by_vllm = {r["index"]: r for r in vllm.json()["results"]}
    for index in range(3):
        assert by_jina[index]["relevance_score"] == pytest.approx(
            by_vllm[index]["relevance_score"], abs=1e-9
        )
    assert by_jina[0]["document"] == {"image": data_url(images[0])}
    assert by_jina[1]["document"] == {"text": CAPTIONS[0]}
    image_query = httpx.post(
        server.url + "/v1/rerank",
        json={
            "model": "clip",
            "query": {
                "content": [{"type": "image_url", "image_url": {"url": data_url(images[0])}}]
            },
            "documents": CAPTIONS,
        },
        timeout=60,
    )
    assert image_query.status_code == 200 and len(image_query.json()["results"]) == 3


@pytest.mark.parametrize(
    ("case", "documents", "status", "message"),
    [
        (
            "truncated PNG",
            [CAPTIONS[0], {"image": b64(truncated_png())}],
            400,
            "documents[1] could not be decoded",
        ),
        (
            "random bytes",
            [{"image": b64(bytes(range(256)) * 4)}],
            400,
            "documents[0] is not an image",
        ),
        (
            "not base64",
            [{"image": "a caption in the wrong field"}],
            400,
            "documents[0] is neither valid base64",
        ),
        (
            "bomb",
            [CAPTIONS[1], CAPTIONS[2], {"image": b64(bomb())}],
            413,
            "documents[2] has far more than",
        ),
        (
            "over the image bytes",
            [{"image": b64(bytes(300_000))}],
            413,
            "at most 200,000 per image",
        ),
        (
            "URL while URLs are off",
            [{"image": "http://127.0.0.1:9/cat.png"}],
            400,
            "does not fetch image URLs",
        ),
    ],
)
def test_bad_images_are_clear_4xx_and_the_server_goes_on(
    server: ServerProcess, case: str, documents: list, status: int, message: str
) -> None:
    with server.client() as client:
        response = client.post(
            "/rerank", json={"model": "clip", "query": QUERY, "documents": documents}
        )
        assert response.status_code == status, (case, response.text)
        assert message in response.json()["error"]["message"], case
        good = client.post(
            "/rerank", json={"model": "clip", "query": QUERY, "documents": [{"image": b64(png(1))}]}
        )
        assert good.status_code == 200


def test_a_body_past_the_limit_is_413_and_an_image_to_a_text_model_400(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        huge = {"model": "clip", "query": QUERY, "documents": [{"image": "A" * (2 << 20)}]}
        response = client.post("/rerank", json=huge)
        assert response.status_code == 413
        text_only = client.post(
            "/rerank",
            json={"model": "builtin", "query": QUERY, "documents": [{"image": b64(png(1))}]},
        )
        assert text_only.status_code == 400 and "'builtin'" in text_only.json()["error"]["message"]
        assert (
            client.post(
                "/rerank", json={"model": "clip", "query": QUERY, "documents": ["ok"]}
            ).status_code
            == 200
        )


def test_url_allowlist_and_loopback_refusal_on_a_server(clip_model: Path, tmp_path: Path) -> None:
    args = ["--model", str(clip_model), "--image-url-hosts", "images.internal.test,localhost"]
    with run_server(args, log_dir=tmp_path) as running, running.client() as client:
        other_host = client.post(
            "/rerank", json={"query": QUERY, "documents": [{"image": "http://127.0.0.1:9/a.png"}]}
        )
        assert other_host.status_code == 400
        assert "host '127.0.0.1' is not allowed" in other_host.json()["error"]["message"]
        loopback = client.post(
            "/rerank", json={"query": QUERY, "documents": [{"image": "http://localhost:9/a.png"}]}
        )
        assert loopback.status_code == 400
        assert "resolves to a loopback address" in loopback.json()["error"]["message"]
        assert client.post("/rerank", json={"query": QUERY, "documents": ["ok"]}).status_code == 200


def test_clip_refuses_onnx_at_once(clip_model: Path) -> None:
    from rerankd import Reranker

    with pytest.raises(UnsupportedModel, match="--backend torch only"):
        Reranker(clip_model, backend="onnx")


def test_the_readme_image_example_runs(server: ServerProcess, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Images.*?```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    lines = [line.split("  #")[0] for line in block.group(1).replace("\\\n", " ").splitlines()]
    script = "\n".join(line for line in lines if not line.startswith("rerankd "))
    script = script.replace("http://localhost:8000/rerank", server.url + "/rerank")
    script = script.replace('"query"', '"model": "clip", "query"')
    (tmp_path / "photo.png").write_bytes(png(5))
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert len(body["results"]) == 2 and "error" not in body
