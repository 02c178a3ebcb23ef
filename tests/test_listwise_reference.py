"""jina-reranker-v3 scores equal the model card's `JinaForRanking.rerank`, written out below.

The reference runs the card's code path on the same tiny checkpoint: transformers'
Qwen3ForCausalLM with its LM head replaced by identity, the last hidden state at the marker
tokens, the projector, one prompt per block and the weighted average of the blocks' query
vectors. Cases: 1, 30 and more documents than one block holds (by count and by tokens), with
and without an instruction, torch and ONNX.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.engine.plan import LongDocPolicy
from tests.texts import CHINESE, SPECIAL, WORDS

INSTRUCTION = "Prefer passages about fruit over passages about phones"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


# The model card's code (modeling.py), written out ------------------------------------------

CARD_SYSTEM = (
    "<|im_start|>system\n"
    "You are a search relevance expert who can determine a ranking of the passages based on "
    "how relevant they are to the query. If the query is a question, how relevant a passage "
    "is depends on how well it answers the question. If not, try to analyze the intent of the "
    "query and assess how well each passage satisfies the intent. If an instruction is "
    "provided, you should follow the instruction when determining the ranking."
    "<|im_end|>\n<|im_start|>user\n"
)
CARD_SPECIALS = {"query_embed_token": "<|rerank_token|>", "doc_embed_token": "<|embed_token|>"}


def card_prompt(query: str, docs: list[str], instruction: str | None) -> str:
    for token in CARD_SPECIALS.values():
        query = query.replace(token, "")
        docs = [d.replace(token, "") for d in docs]
    suffix = "<|im_end|>\n<|im_start|>assistant\n" + "<think>\n\n</think>\n\n"
    prompt = (
        f"I will provide you with {len(docs)} passages, each indicated by a numerical "
        f"identifier. Rank the passages based on their relevance to query: {query}\n"
    )
    if instruction:
        prompt += f"<instruct>\n{instruction}\n</instruct>\n"
    doc_prompts = [
        f'<passage id="{i}">\n{doc}{CARD_SPECIALS["doc_embed_token"]}\n</passage>'
        for i, doc in enumerate(docs)
    ]
    prompt += "\n".join(doc_prompts) + "\n"
    prompt += f"<query>\n{query}{CARD_SPECIALS['query_embed_token']}\n</query>"
    return CARD_SYSTEM + prompt + suffix


class CardModel:
    """`JinaForRanking` on transformers' Qwen3ForCausalLM, as modeling.py builds it."""

    def __init__(self, path: Path, model_max_length: int) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, Qwen3ForCausalLM

        self.torch = torch
        self.model = Qwen3ForCausalLM.from_pretrained(str(path)).eval()
        self.model.lm_head = torch.nn.Identity()
        hidden = self.model.config.hidden_size
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden // 2, bias=False),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden // 2, 512, bias=False),
        )
        weights = load_file(str(path / "model.safetensors"))
        self.projector[0].weight.data = weights["projector.0.weight"]
        self.projector[2].weight.data = weights["projector.2.weight"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.model_max_length = model_max_length
        self.doc_id = self.tokenizer.convert_tokens_to_ids(CARD_SPECIALS["doc_embed_token"])
        self.query_id = self.tokenizer.convert_tokens_to_ids(CARD_SPECIALS["query_embed_token"])

    def forward(self, query: str, docs: list[str], instruction: str | None) -> tuple:
        torch = self.torch
        batch = self.tokenizer(
            text=[card_prompt(query, docs, instruction)],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        with torch.no_grad():
            outputs = self.model(**batch, use_cache=False, output_hidden_states=True)
            hidden = outputs.hidden_states[-1][0]
            ids = batch["input_ids"][0]
            doc_embeds = self.projector(hidden[ids == self.doc_id])
            query_embeds = self.projector(hidden[ids == self.query_id])
            assert query_embeds.shape[0] == 1
            scores = torch.nn.functional.cosine_similarity(
                doc_embeds, query_embeds.expand_as(doc_embeds), dim=-1
            )
        return doc_embeds, query_embeds, scores

    def truncate(self, query: str, documents: list[str], max_query: int, max_doc: int) -> tuple:
        docs, lengths = [], []
        for doc in documents:
            tokens = self.tokenizer(doc, truncation=True, max_length=max_doc)
            if len(tokens["input_ids"]) >= max_doc:
                doc = self.tokenizer.decode(tokens["input_ids"])
            lengths.append(len(tokens["input_ids"]))
            docs.append(doc)
        query_tokens = self.tokenizer(query, truncation=True, max_length=max_query)
        if len(query_tokens["input_ids"]) >= max_query:
            query = self.tokenizer.decode(query_tokens["input_ids"])
        return query, docs, lengths, len(query_tokens["input_ids"])

    def rerank(self, query: str, documents: list[str], instruction: str | None) -> np.ndarray:
        """`rerank`'s relevance_score per document, in input order (the card's block loop)."""
        max_length, max_query, max_doc, block_size = self.tokenizer.model_max_length, 512, 2048, 125
        query, docs, lengths, query_length = self.truncate(query, documents, max_query, max_doc)
        capacity = max_length - 2 * query_length
        held: list[str] = []
        doc_embeddings: list[np.ndarray] = []
        query_embeddings: list[np.ndarray] = []
        weights: list[float] = []

        def run_block() -> None:
            doc_embeds, query_embeds, scores = self.forward(query, held, instruction)
            doc_embeddings.extend(doc_embeds.float().numpy())
            query_embeddings.append(query_embeds[0].float().numpy())
            weights.append(((1.0 + scores.view(-1).float().numpy()) / 2.0).max())

        for length, doc in zip(lengths, docs, strict=True):
            held.append(doc)
            capacity -= length
            if len(held) >= block_size or capacity <= max_doc:
                run_block()
                held = []
                capacity = max_length - 2 * query_length
        if held:
            run_block()
        merged = np.average(np.array(query_embeddings), axis=0, weights=weights)
        embeds = np.array(doc_embeddings)
        return np.asarray(
            np.dot(merged, embeds.T) / (np.linalg.norm(merged) * np.linalg.norm(embeds, axis=1))
        )


# The cases ---------------------------------------------------------------------------------


def documents(count: int, seed: int, max_words: int = 30) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        text = " ".join(rng.choices(WORDS, k=rng.randint(1, max_words)))
        if i % 4 == 0:
            text += " " + CHINESE[: rng.randint(1, len(CHINESE))]
        if i % 5 == 0:
            text += " " + rng.choice(SPECIAL)
        docs.append(f"{i}: {text}")
    return docs


QUERY = "which fruit grows near Paris 🍎"
MAX_LENGTH = 8192


@pytest.fixture(scope="module")
def card(jina_reranker_v3: Path) -> CardModel:
    return CardModel(jina_reranker_v3, MAX_LENGTH)


@pytest.fixture(scope="module")
def torch_reranker(jina_reranker_v3: Path) -> Reranker:
    return Reranker(jina_reranker_v3, threads=1, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def onnx_reranker(jina_reranker_v3: Path) -> Reranker:
    return Reranker(jina_reranker_v3, threads=1, max_length=MAX_LENGTH, backend="onnx")


CASES = {
    "one": [documents(1, 1)[0]],
    # One document past the card's 2048-token cut; a passage holding a marker string.
    "thirty": documents(28, 2)
    + ["orchard " * 2300, "a passage that writes <|embed_token|> and <|rerank_token|> itself"],
    "two-blocks": documents(131, 3),  # more than the 125 passages one block holds
}


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
@pytest.mark.parametrize("case", list(CASES))
def test_scores_equal_the_model_card(
    case: str,
    instruction: str | None,
    card: CardModel,
    torch_reranker: Reranker,
    onnx_reranker: Reranker,
) -> None:
    docs = CASES[case]
    expected = card.rerank(QUERY, docs, instruction)
    assert torch_reranker.engine.family.name == "jina-reranker-v3"
    scored = torch_reranker.score([(QUERY, d) for d in docs], raw=True, instruction=instruction)
    assert np.abs(scored - expected).max() < 1e-5
    onnx = onnx_reranker.score([(QUERY, d) for d in docs], raw=True, instruction=instruction)
    assert np.abs(onnx - expected).max() < 1e-4
    if len(docs) > 1:
        assert np.std(expected) > 0.01, "the fixture model should spread its scores"


def test_blocks_cut_by_tokens_equal_the_model_card(jina_reranker_v3: Path) -> None:
    """A small model_max_length cuts blocks by the card's token budget, not by count."""
    docs = documents(24, 4, max_words=120)
    card = CardModel(jina_reranker_v3, 2600)
    reranker = Reranker(jina_reranker_v3, threads=1, max_length=2600)
    plan = reranker.engine.family.plan_blocks(QUERY, docs, LongDocPolicy(), None)
    assert len(plan.blocks) > 2
    expected = card.rerank(QUERY, docs, None)
    assert np.abs(reranker.score([(QUERY, d) for d in docs], raw=True) - expected).max() < 1e-5


def test_the_instruction_and_the_order_change_scores(torch_reranker: Reranker) -> None:
    docs = documents(6, 5)
    plain = torch_reranker.score([(QUERY, d) for d in docs], raw=True)
    told = torch_reranker.score([(QUERY, d) for d in docs], raw=True, instruction=INSTRUCTION)
    assert np.abs(plain - told).min() > 0
    reversed_ = torch_reranker.score([(QUERY, d) for d in docs[::-1]], raw=True)[::-1]
    assert np.abs(plain - reversed_).max() > 1e-4  # listwise: the neighbours matter


def test_chunking_scores_a_long_document_as_its_best_passage(torch_reranker: Reranker) -> None:
    long = "apple orchard fruit " * 60
    policy = LongDocPolicy(strategy="chunk", max_tokens_per_doc=64, overlap=8)
    plan = torch_reranker.engine.family.plan_blocks(QUERY, ["short one", long], policy, None)
    assert len(plan.owners) == 1 and plan.owners[0][0] == 0
    assert int((plan.owners[0] == 1).sum()) > 1  # the long document is several passages
    scores = torch_reranker.score([(QUERY, "short one"), (QUERY, long)], raw=True, policy=policy)
    assert np.all(np.isfinite(scores))
    with pytest.raises(Exception, match="tokens"):
        torch_reranker.score(
            [(QUERY, long)],
            policy=LongDocPolicy(max_tokens_per_doc=64, allow_truncation=False),
        )


def test_recognised_by_config_or_name_else_named_with_family(
    jina_reranker_v3: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    assert resolve(ModelSpec(str(jina_reranker_v3))).family == "jina-reranker-v3"
    # A conversion whose config lost JinaForRanking: the name still says what it is.
    renamed = shutil.copytree(jina_reranker_v3, tmp_path / "jina-reranker-v3-copy")
    config = json.loads((renamed / "config.json").read_text())
    config["architectures"] = ["Qwen3Model"]
    (renamed / "config.json").write_text(json.dumps(config))
    assert resolve(ModelSpec(str(renamed))).family == "jina-reranker-v3"
    # Neither config nor name: not taken for jina-reranker-v3 unless the family is named.
    anonymous = shutil.copytree(renamed, tmp_path / "my-ranker")
    assert resolve(ModelSpec(str(anonymous))).family != "jina-reranker-v3"
    named = resolve(ModelSpec(str(anonymous), family="jina-reranker-v3"))
    assert named.family == "jina-reranker-v3"
    docs = documents(3, 9)
    pairs = [(QUERY, d) for d in docs]
    got = Reranker(anonymous, threads=1, family="jina-reranker-v3").score(pairs, raw=True)
    assert np.array_equal(got, Reranker(jina_reranker_v3, threads=1).score(pairs, raw=True))
