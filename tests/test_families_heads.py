"""Decoder heads: padding side and batch mates change no score; the yes/no head reads two rows.

A causal LM reranker needs two rows of a vocabulary-sized LM head at one position; these
tests check that torch never computes the rest and that the exported ONNX graph neither
outputs nor holds it, and that int8 keeps the order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from rerankd import Reranker
from rerankd.engine import LongDocPolicy
from rerankd.engine.backend import PaddedBatch
from tests.test_families_reference import MAX_LENGTH, load, one_thread, stress_pairs  # noqa: F401
from tests.texts import mixed_pairs

DECODERS = ["qwen3_reranker", "gemma_reranker", "qwen3_seq_cls"]


def sequences(reranker: Reranker, pairs: list[tuple[str, str]]) -> list:
    engine = reranker.engine
    instruction = engine.instruction_for(None)
    return [
        s
        for query, document in pairs
        for s in engine.plan(query, [document], LongDocPolicy(), instruction).sequences
    ]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("fixture", DECODERS)
def test_left_and_right_padding_give_the_same_scores(
    fixture: str, backend: str, request: pytest.FixtureRequest
) -> None:
    # Whole sequences (the shared-prefix path is tests/test_shared_prefix.py's).
    reranker = load(request.getfixturevalue(fixture), backend=backend, share_prefix=False)
    engine = reranker.engine
    batch = sequences(reranker, stress_pairs())
    lengths = {len(s) for s in batch}
    assert len(lengths) >= 8, "the batch should mix lengths, so most rows are padded"
    left = engine.backend.run(PaddedBatch.pad(batch, engine.family.pad_id, "left"))
    right = engine.backend.run(PaddedBatch.pad(batch, engine.family.pad_id, "right"))
    assert np.abs(left - right).max() < 1e-5


@pytest.mark.parametrize("fixture", DECODERS)
def test_a_pair_alone_scores_as_in_a_batch_of_64(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    reranker = load(request.getfixturevalue(fixture), max_batch_tokens=64 * MAX_LENGTH)
    pairs = mixed_pairs(64, seed=3, max_words=300)
    together = reranker.score(pairs, raw=True)
    alone = np.array([reranker.score([pair], raw=True)[0] for pair in pairs])
    assert np.abs(together - alone).max() < 1e-5


@pytest.mark.parametrize("fixture", ["qwen3_reranker", "gemma_reranker"])
def test_torch_never_computes_vocabulary_sized_logits(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rerankd.families.heads import TokenLogitHead

    reranker = load(request.getfixturevalue(fixture), share_prefix=False)
    family = reranker.engine.family
    vocab = int(family.model.config["vocab_size"])
    hidden = int(family.model.config["hidden_size"])
    causal_lm = AutoModelForCausalLM.from_pretrained(str(family.model.path)).eval()
    head = TokenLogitHead(causal_lm, *family.answer_tokens()).eval()  # type: ignore[attr-defined]
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def record(module: torch.nn.Module, args: object, output: object) -> None:
        tensors = output if isinstance(output, (tuple, list)) else [output]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                shapes.append((type(module).__name__, tuple(tensor.shape)))
            elif hasattr(tensor, "last_hidden_state"):
                shapes.append((type(module).__name__, tuple(tensor.last_hidden_state.shape)))

    for module in head.modules():
        module.register_forward_hook(record)
    lm_head_calls: list[object] = []
    causal_lm.get_output_embeddings().register_forward_hook(
        lambda *args: lm_head_calls.append(args)
    )
    batch = PaddedBatch.pad(sequences(reranker, stress_pairs()[:16]), family.pad_id, "left")
    with torch.inference_mode():
        scores = head(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    assert scores.shape == (16,)
    assert len(shapes) > 10 and not lm_head_calls
    assert [s for s in shapes if s[1][-1] == vocab] == []
    # The only vocabulary-by-hidden matrix the head holds is the input embedding.
    big = [
        n
        for n, t in [*head.named_parameters(), *head.named_buffers()]
        if t.numel() >= vocab * hidden
    ]
    assert big == ["body.embed_tokens.weight"]


@pytest.mark.parametrize("fixture", ["qwen3_reranker", "gemma_reranker"])
def test_the_onnx_graph_outputs_one_score_and_holds_no_lm_head(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    import onnx
    from onnx import numpy_helper

    from rerankd.engine.onnx_backend import cache_entry

    reranker = load(request.getfixturevalue(fixture), backend="onnx")
    family = reranker.engine.family
    vocab, hidden = int(family.model.config["vocab_size"]), int(family.model.config["hidden_size"])
    graph = onnx.load(str(cache_entry(family.model, reranker.engine.options) / "model.onnx")).graph
    (output,) = graph.output
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["batch"]
    tensors = [numpy_helper.to_array(t) for t in graph.initializer]
    tensors += [
        numpy_helper.to_array(a.t)
        for n in graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.t.dims
    ]
    vocab_matrices = [t.shape for t in tensors if t.size >= vocab * hidden]
    assert vocab_matrices == [(vocab, hidden)], "only the input embedding"


def test_int8_keeps_the_order_of_qwen3_scores(qwen3_reranker: Path) -> None:
    pairs = mixed_pairs(300, seed=4, max_words=120)
    fp32 = load(qwen3_reranker, backend="onnx").score(pairs, raw=True)
    int8 = load(qwen3_reranker, backend="onnx", dtype="int8")
    assert "int8" in int8.engine.backend.description
    rho = spearmanr(int8.score(pairs, raw=True), fp32).statistic
    assert rho >= 0.98, rho
