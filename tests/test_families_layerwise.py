"""bge's layerwise rerankers equal FlagEmbedding's on the same tiny checkpoints.

References, run here:
- bge-reranker-v2-minicpm-layerwise: FlagEmbedding's `LayerWiseLLMReranker` with the MiniCPM
  modeling code FlagEmbedding ships. That code predates transformers 5; three shims make it
  load (its rope setup reads `rope_scaling["type"]`; `_tied_weights_keys` as a list; its
  rotary cos/sin caches are non-persistent buffers that transformers 5 leaves unset after
  loading, so they are computed again). Its arithmetic is untouched.
- bge-reranker-v2.5-gemma2-lightweight: FlagEmbedding's `LightweightLLMReranker` (prompt,
  tokenization, collation, `token_compress`, the head and the pooling all FlagEmbedding's).
  Its `CostWiseGemmaModel.forward` calls transformers' Gemma2 layers the 4.x way (no rotary
  embeddings passed in), so `_forward` below is that published forward with the layer call
  written for transformers 5: rotary embeddings and masks from transformers' Gemma2 helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import InvalidInput
from tests.server import ServerProcess, run_server
from tests.texts import mixed_pairs

MAX_LENGTH = 128


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    pairs = mixed_pairs(14, seed=5, max_words=160)
    return pairs + [("apple phone", "titanium apple phone " * 80), ("a", "b")]


@pytest.fixture(scope="session")
def minicpm_layerwise(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_layerwise import build_minicpm_layerwise

    return build_minicpm_layerwise(model_root / "tiny-minicpm-layerwise", layers=4, start_layer=2)


@pytest.fixture(scope="session")
def gemma2_lightweight(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_layerwise import build_gemma2_lightweight

    return build_gemma2_lightweight(model_root / "tiny-gemma2-lightweight", layers=4, start_layer=2)


def load(path: Path) -> Reranker:
    return Reranker(path, max_length=MAX_LENGTH, threads=1)


# FlagEmbedding's layerwise (MiniCPM) reranker, with the transformers-5 shims -----------------


@pytest.fixture(scope="module")
def layerwise_reference(minicpm_layerwise: Path) -> Any:
    import torch
    from FlagEmbedding.inference.reranker.decoder_only import layerwise
    from FlagEmbedding.inference.reranker.decoder_only.models import modeling_minicpm_reranker as mm

    def init_rope(self: Any) -> None:  # the published default branch (rope_scaling None)
        self.rotary_emb = mm.MiniCPMRotaryEmbedding(
            self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            base=self.rope_theta,
        )

    mm.MiniCPMAttention._init_rope = init_rope
    mm.LayerWiseMiniCPMForCausalLM._tied_weights_keys = {}
    reference = layerwise.LayerWiseLLMReranker(
        str(minicpm_layerwise), devices=["cpu"], batch_size=8, max_length=MAX_LENGTH
    )
    for layer in reference.model.model.layers:
        rotary = layer.self_attn.rotary_emb
        rotary.inv_freq = 1.0 / (
            rotary.base ** (torch.arange(0, rotary.dim, 2).float() / rotary.dim)
        )
        rotary._set_cos_sin_cache(rotary.max_position_embeddings, "cpu", torch.float32)
    return reference


@pytest.mark.parametrize("cutoff", [2, 4])
def test_layerwise_equals_flagembedding(
    minicpm_layerwise: Path, layerwise_reference: Any, pairs: list[tuple[str, str]], cutoff: int
) -> None:
    expected = np.array(layerwise_reference.compute_score(pairs, cutoff_layers=[cutoff]))
    reranker = load(minicpm_layerwise)
    assert reranker.engine.family.name == "bge-reranker-layerwise"
    raw = reranker.score(pairs, raw=True, options={"cutoff_layers": [cutoff]})
    assert np.abs(raw - expected).max() < 1e-5
    normalized = np.array(
        layerwise_reference.compute_score(pairs, cutoff_layers=[cutoff], normalize=True)
    )
    assert (
        np.abs(reranker.score(pairs, options={"cutoff_layers": cutoff}) - normalized).max() < 1e-5
    )
    assert len(set(np.round(expected, 9))) == len(set(np.round(raw, 9)))  # no new ties
    assert np.std(normalized) > 0.01


def test_layerwise_default_is_the_last_layer_and_layers_differ(
    minicpm_layerwise: Path, pairs: list[tuple[str, str]]
) -> None:
    reranker = load(minicpm_layerwise)
    last = reranker.score(pairs, raw=True, options={"cutoff_layers": 4})
    assert np.array_equal(reranker.score(pairs, raw=True), last)
    assert np.abs(reranker.score(pairs, raw=True, options={"cutoff_layers": 2}) - last).min() > 0


def test_model_defaults_are_family_options(
    minicpm_layerwise: Path, gemma2_lightweight: Path, pairs: list[tuple[str, str]]
) -> None:
    layer2 = Reranker(
        minicpm_layerwise, max_length=MAX_LENGTH, threads=1, family_options={"cutoff_layers": 2}
    )
    plain = load(minicpm_layerwise)
    assert np.array_equal(
        layer2.score(pairs, raw=True), plain.score(pairs, raw=True, options={"cutoff_layers": 2})
    )
    # A request's own field wins over the model's default.
    assert np.array_equal(
        layer2.score(pairs, raw=True, options={"cutoff_layers": 4}), plain.score(pairs, raw=True)
    )
    light = Reranker(
        gemma2_lightweight,
        max_length=MAX_LENGTH,
        threads=1,
        family_options={"compress_ratio": 2, "compress_layers": [1]},
    )
    expected = load(gemma2_lightweight).score(
        pairs, raw=True, options={"cutoff_layers": 3, "compress_ratio": 2, "compress_layers": [1]}
    )
    assert np.array_equal(light.score(pairs, raw=True, options={"cutoff_layers": 3}), expected)


@pytest.mark.parametrize(
    ("fixture", "options"),
    [
        ("minicpm_layerwise", {"cutoff_layers": 9}),
        ("minicpm_layerwise", {"compress_ratio": 2}),
        ("gemma2_lightweight", {"compress_ratio": 5}),
        ("bert_model", {"cutoff_layers": 2}),
    ],
)
def test_bad_model_defaults_fail_at_load(
    fixture: str, options: dict[str, object], request: pytest.FixtureRequest
) -> None:
    from rerankd.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="family_options"):
        Reranker(request.getfixturevalue(fixture), threads=1, family_options=options)


@pytest.mark.parametrize(
    "options",
    [
        {"cutoff_layers": 1},  # below start_layer: no head
        {"cutoff_layers": 5},
        {"cutoff_layers": [2, 3]},
        {"cutoff_layers": "2"},
        {"compress_ratio": 2},  # the MiniCPM model compresses nothing
    ],
)
def test_layerwise_refuses_bad_options(minicpm_layerwise: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        load(minicpm_layerwise).score([("q", "d")], options=options)


# FlagEmbedding's lightweight (Gemma2) reranker, its model forward written for transformers 5 ---


def _forward(self: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
    """CostWiseGemmaModel.forward (the layer_wise branch), calling transformers 5's layers."""
    import torch
    from FlagEmbedding.inference.reranker.decoder_only.models import gemma_model as gm
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RotaryEmbedding

    compress_layer = kwargs.get("compress_layer")
    compress_ratio = kwargs.get("compress_ratio")
    compress_ratio = None if compress_ratio == 1 else compress_ratio
    cutoff_layers = kwargs.get("cutoff_layers")
    rotary = getattr(self, "_rotary", None) or Gemma2RotaryEmbedding(self.config)
    self._rotary = rotary

    def masks(hidden: Any, mask: Any, positions: Any) -> dict[str, Any]:
        args = {
            "config": self.config,
            "inputs_embeds": hidden,
            "attention_mask": mask,
            "cache": None,
            "position_ids": positions,
        }
        return {
            "full_attention": create_causal_mask(**args),
            "sliding_attention": create_sliding_window_causal_mask(**args),
        }

    hidden_states = self.embed_tokens(input_ids)
    normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
    hidden_states = hidden_states * normalizer
    position_ids = torch.arange(hidden_states.shape[1]).unsqueeze(0)
    causal = masks(hidden_states, attention_mask, position_ids)
    query_lengths = torch.tensor(kwargs["query_lengths"])
    prompt_lengths = torch.tensor(kwargs["prompt_lengths"])
    if isinstance(cutoff_layers, int):
        cutoff_layers = [cutoff_layers]
    max_layer = max(cutoff_layers)
    all_hidden_states: tuple[Any, ...] = ()
    all_attention_masks: tuple[Any, ...] = ()
    for idx, decoder_layer in enumerate(self.layers):
        if idx in cutoff_layers:
            all_hidden_states += (self.norm(hidden_states),)
            all_attention_masks += (attention_mask,)
        if idx == max_layer:
            break
        compress = compress_layer is not None and compress_ratio is not None
        if compress and idx in compress_layer and idx != 0:
            hidden_states, attention_mask = gm.token_compress(
                compress_ratio, hidden_states, attention_mask, query_lengths, prompt_lengths
            )
            position_ids = torch.arange(hidden_states.shape[1]).unsqueeze(0)
            causal = masks(hidden_states, attention_mask, position_ids)
        hidden_states = decoder_layer(
            hidden_states,
            attention_mask=causal[self.config.layer_types[idx]],
            position_ids=position_ids,
            position_embeddings=rotary(hidden_states, position_ids),
        )
    hidden_states = self.norm(hidden_states)
    if self.config.num_hidden_layers == max_layer:
        all_hidden_states += (hidden_states,)
        all_attention_masks += (attention_mask,)
    return gm.CostWiseModelOutputWithPast(
        last_hidden_state=hidden_states,
        hidden_states=all_hidden_states,
        attention_masks=all_attention_masks,
    )


@pytest.fixture(scope="module")
def lightweight_reference(gemma2_lightweight: Path) -> Any:
    from FlagEmbedding.inference.reranker.decoder_only import lightweight
    from FlagEmbedding.inference.reranker.decoder_only.models import gemma_model as gm

    gm.CostWiseGemmaModel.forward = _forward
    gm.CostWiseGemmaForCausalLM._tied_weights_keys = {}
    reference = lightweight.LightweightLLMReranker(
        str(gemma2_lightweight), devices=["cpu"], batch_size=8, max_length=MAX_LENGTH
    )
    reference.model.config._attn_implementation = "eager"
    return reference


@pytest.mark.parametrize(("cutoff", "ratio", "layers"), [(4, 1, None), (3, 2, [1, 2]), (4, 4, [2])])
def test_lightweight_equals_flagembedding(
    gemma2_lightweight: Path,
    lightweight_reference: Any,
    pairs: list[tuple[str, str]],
    cutoff: int,
    ratio: int,
    layers: list[int] | None,
) -> None:
    expected = np.array(
        lightweight_reference.compute_score(
            pairs, cutoff_layers=[cutoff], compress_ratio=ratio, compress_layers=layers
        )
    )
    reranker = load(gemma2_lightweight)
    assert reranker.engine.family.name == "bge-reranker-lightweight"
    options: dict[str, object] = {"cutoff_layers": [cutoff], "compress_ratio": ratio}
    if layers is not None:
        options["compress_layers"] = layers
    raw = reranker.score(pairs, raw=True, options=options)
    assert np.abs(raw - expected).max() < 1e-5
    assert len(set(np.round(expected, 9))) == len(set(np.round(raw, 9)))
    assert np.std(expected) > 0.05


def test_compression_changes_lightweight_scores(
    gemma2_lightweight: Path, pairs: list[tuple[str, str]]
) -> None:
    reranker = load(gemma2_lightweight)
    plain = reranker.score(pairs[:6], raw=True)
    compressed = reranker.score(
        pairs[:6], raw=True, options={"compress_ratio": 2, "compress_layers": [1]}
    )
    assert np.abs(plain - compressed).max() > 1e-3


@pytest.mark.parametrize(
    "options",
    [
        {"compress_ratio": 3},
        {"compress_ratio": 2, "compress_layers": [4]},
        {"compress_layers": []},
        {"cutoff_layers": 1},
    ],
)
def test_lightweight_refuses_bad_options(
    gemma2_lightweight: Path, options: dict[str, object]
) -> None:
    with pytest.raises(InvalidInput):
        load(gemma2_lightweight).score([("q", "d")], options=options)


# Over HTTP: the extension fields on the native and Cohere-style routes ---------------------


@pytest.fixture(scope="module")
def server(
    gemma2_lightweight: Path, bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = [
        "--model", f"{gemma2_lightweight}=light",
        "--model", f"{bert_model}=bert",
        "--max-length", str(MAX_LENGTH),
    ]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("layerwise")) as running:
        yield running


@pytest.fixture(scope="module")
def defaults_server(
    gemma2_lightweight: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = [
        "--model", f"{gemma2_lightweight}=light",
        "--max-length", str(MAX_LENGTH),
        "--family-options", '{"cutoff_layers": 3, "compress_ratio": 2, "compress_layers": [1]}',
    ]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("layer-defaults")) as running:
        yield running


def test_the_serve_flag_sets_model_defaults(
    defaults_server: ServerProcess, gemma2_lightweight: Path, pairs: list[tuple[str, str]]
) -> None:
    query, document = pairs[0]
    fields = {"cutoff_layers": 3, "compress_ratio": 2, "compress_layers": [1]}
    expected = load(gemma2_lightweight).score([(query, document)], raw=True, options=fields)
    with defaults_server.client() as client:
        body = {"query": query, "documents": [document], "raw_scores": True}
        response = client.post("/rerank", json=body)
    assert response.status_code == 200, response.text
    assert abs(response.json()["results"][0]["score"] - expected[0]) < 1e-5


def test_routes_take_the_layer_fields(
    server: ServerProcess, gemma2_lightweight: Path, pairs: list[tuple[str, str]]
) -> None:
    query = pairs[0][0]
    documents = [d for q, d in pairs if q == query][:4] or [pairs[0][1]]
    fields = {"cutoff_layers": [3], "compress_ratio": 2, "compress_layers": [1]}
    expected = load(gemma2_lightweight).score(
        [(query, d) for d in documents], raw=True, options=fields
    )
    with server.client() as client:
        native = client.post(
            "/rerank",
            json={"model": "light", "query": query, "documents": documents, "raw_scores": True}
            | fields,
        )
        assert native.status_code == 200, native.text
        got = {r["index"]: r["score"] for r in native.json()["results"]}
        assert np.abs(np.array([got[i] for i in range(len(documents))]) - expected).max() < 1e-5
        cohere = client.post(
            "/v1/rerank",
            json={"model": "light", "query": query, "documents": documents} | fields,
        )
        assert cohere.status_code == 200, cohere.text
        default = client.post(
            "/v1/rerank", json={"model": "light", "query": query, "documents": documents}
        )
        # Another cutoff layer is another score (and another cache entry).
        assert cohere.json()["results"] != default.json()["results"]


@pytest.mark.parametrize(
    ("model", "extra", "field"),
    [
        ("light", {"compress_ratio": 3}, "compress_ratio"),
        ("light", {"cutoff_layers": [2, 3]}, "cutoff_layers"),
        ("light", {"cutoff_layers": "3"}, "cutoff_layers"),
        ("bert", {"cutoff_layers": 2}, "cutoff_layers"),
    ],
)
@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_bad_layer_fields_are_400(
    server: ServerProcess, model: str, extra: dict[str, object], field: str, path: str
) -> None:
    with server.client() as client:
        response = client.post(
            path, json={"model": model, "query": "q", "documents": ["a", "b"]} | extra
        )
    assert response.status_code in (400, 422), response.text
    assert field in response.text


def test_onnx_is_refused_with_the_reason(minicpm_layerwise: Path) -> None:
    from rerankd.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="torch only"):
        Reranker(minicpm_layerwise, max_length=MAX_LENGTH, threads=1, backend="onnx")
