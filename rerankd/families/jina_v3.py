"""jina-reranker-v3: a Qwen3 decoder that ranks up to 125 passages in one prompt.

Reproduces the model card's `JinaForRanking.rerank` (its `modeling.py`):

- Query cut to 512 tokens and each document to 2048 (a text that reaches the limit is replaced
  by the decoding of its first tokens); the marker strings are removed from both.
- Blocks: passages are added in order while fewer than 125 are held and the room left
  (`max_length - 2 * query tokens - the passages' tokens`) stays above 2048.
- One prompt per block: the system prompt, "I will provide you with N passages ...", an
  optional `<instruct>` part, `<passage id="i">\\n{doc}<|embed_token|>\\n</passage>` joined by
  newlines, then `<query>\\n{query}<|rerank_token|>\\n</query>` and the assistant prefix with
  an empty think block.
- The last hidden state at each marker goes through the projector (Linear without bias, ReLU,
  Linear without bias: hidden -> hidden/2 -> 512); per block, the passages' cosines with the
  query give the block weight max((1 + cos) / 2); the query vectors of all blocks are averaged
  with those weights and each document scores the cosine of its vector with that average.

The raw score is that cosine (the card's `relevance_score`); the relevance rerankd returns is
(cosine + 1) / 2. Where rerankd extends the card: `--max-length` stands for the tokenizer's
`model_max_length`, a request's `max_tokens_per_doc` lowers the 2048, and with the chunk
strategy a long document is several passages and scores as its best.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from rerankd.engine.plan import LongDocPolicy, windows
from rerankd.engine.tokenize import Sequence
from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.listwise import ListwiseFamily, ListwisePlan

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel

DOC_TOKEN = "<|embed_token|>"
QUERY_TOKEN = "<|rerank_token|>"
BLOCK_DOCUMENTS = 125
MAX_DOC_TOKENS = 2048
MAX_QUERY_TOKENS = 512
SYSTEM = (
    "<|im_start|>system\n"
    "You are a search relevance expert who can determine a ranking of the passages based on "
    "how relevant they are to the query. If the query is a question, how relevant a passage "
    "is depends on how well it answers the question. If not, try to analyze the intent of the "
    "query and assess how well each passage satisfies the intent. If an instruction is "
    "provided, you should follow the instruction when determining the ranking."
    "<|im_end|>\n<|im_start|>user\n"
)
ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _named_jina_v3(model: ResolvedModel) -> bool:
    names = f"{model.source} {model.name} {model.path.name}".lower()
    return "jina-reranker-v3" in names and "v3.5" not in names


def sanitize(text: str) -> str:
    """The text without the marker strings (a passage may not place its own markers)."""
    return text.replace(QUERY_TOKEN, "").replace(DOC_TOKEN, "")


class JinaRerankerV3(ListwiseFamily):
    name = "jina-reranker-v3"
    summary = "jina-reranker-v3 (0.6B): Qwen3 listwise, up to 125 passages per prompt, cosine"
    reference = "the jina-reranker-v3 model card's modeling.py (JinaForRanking.rerank)"
    takes_instruction = True
    default_instruction = None
    # The card's tokenizer `model_max_length`: what its block budget is computed from.
    default_max_length = 131072
    padding_side = "right"  # the head reads marker positions; right padding masks no query row
    block_documents = BLOCK_DOCUMENTS
    int8_refusal = (
        "the ranking comes from cosines of projected hidden states, which int8 moves more than "
        "the gaps between close passages; no probe checks it yet"
    )

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        architectures = model.config.get("architectures") or []
        if model.config.get("model_type") != "qwen3":
            return False
        return "JinaForRanking" in architectures or _named_jina_v3(model)

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        if model.config.get("model_type") != "qwen3":
            raise UnsupportedModel(
                f"{model.path} is a {model.config.get('model_type')!r} model; the "
                "jina-reranker-v3 family reads a Qwen3 decoder with its projector"
            )

    @property
    def uses_type_ids(self) -> bool:
        return False

    @functools.cached_property
    def markers(self) -> tuple[int, int]:
        """(the passage marker's id, the query marker's id)."""
        ids = (self.tokenizer.token_id(DOC_TOKEN), self.tokenizer.token_id(QUERY_TOKEN))
        if ids[0] is None or ids[1] is None:
            raise UnsupportedModel(
                f"{self.model.path}: the tokenizer lacks {DOC_TOKEN} or {QUERY_TOKEN}, the "
                "tokens jina-reranker-v3 reads its vectors at"
            )
        return int(ids[0]), int(ids[1])

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from rerankd.families.heads import load_listwise_head

        doc, query = self.markers
        return load_listwise_head(self.model, dtype, attention, doc, query, BLOCK_DOCUMENTS)

    # Planning -----------------------------------------------------------------------------

    def _cut(self, text: str, ids: list[int], limit: int) -> tuple[str, int]:
        """The card's cut: a text that reaches `limit` tokens becomes its first ones, decoded."""
        if len(ids) >= limit:
            return self.tokenizer.decode(ids[:limit]), limit
        return text, len(ids)

    def plan_blocks(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ListwisePlan:
        tokenizer = self.tokenizer
        encoded = tokenizer.encode([query, *documents])
        query_limit = min(MAX_QUERY_TOKENS, self.limits.query_cap)
        query, query_length = self._cut(query, encoded[0], query_limit)
        room = MAX_DOC_TOKENS
        if policy.max_tokens_per_doc is not None:
            room = min(room, policy.max_tokens_per_doc)
        passages: list[tuple[str, int, int]] = []  # (text, tokens, document index)
        for index, (text, ids) in enumerate(zip(documents, encoded[1:], strict=True)):
            cut = windows(ids, room, policy, index)
            if len(cut) == 1 and len(cut[0]) == len(ids):
                passages.append((*self._cut(text, ids, room), index))
            else:
                passages += [(tokenizer.decode(w), len(w), index) for w in cut]
        budget = self.limits.max_length - 2 * query_length
        blocks: list[Sequence] = []
        owners: list[np.ndarray] = []
        held: list[tuple[str, int, int]] = []
        left = budget
        for passage in passages:
            held.append(passage)
            left -= passage[1]
            if len(held) >= BLOCK_DOCUMENTS or left <= room:
                blocks.append(self._block(query, [p[0] for p in held], instruction))
                owners.append(np.asarray([p[2] for p in held], dtype=np.int64))
                held, left = [], budget
        if held:
            blocks.append(self._block(query, [p[0] for p in held], instruction))
            owners.append(np.asarray([p[2] for p in held], dtype=np.int64))
        return ListwisePlan(blocks, owners, len(documents))

    def prompt(self, query: str, passages: list[str], instruction: str | None) -> str:
        """The card's prompt for one block."""
        query = sanitize(query)
        head = (
            f"I will provide you with {len(passages)} passages, each indicated by a numerical "
            f"identifier. Rank the passages based on their relevance to query: {query}\n"
        )
        if instruction:
            head += f"<instruct>\n{sanitize(instruction)}\n</instruct>\n"
        body = "\n".join(
            f'<passage id="{i}">\n{sanitize(p)}{DOC_TOKEN}\n</passage>'
            for i, p in enumerate(passages)
        )
        return f"{SYSTEM}{head}{body}\n<query>\n{query}{QUERY_TOKEN}\n</query>{ASSISTANT}"

    def _block(self, query: str, passages: list[str], instruction: str | None) -> Sequence:
        ids = self.tokenizer.encode([self.prompt(query, passages, instruction)])[0]
        doc, marker = self.markers
        if ids.count(doc) != len(passages) or ids.count(marker) != 1:
            raise InvalidInput("a passage or the query could not be marked; check its text")
        return Sequence(ids, [0] * len(ids))

    # Scores -------------------------------------------------------------------------------

    def combine(self, outputs: np.ndarray, plan: ListwisePlan) -> np.ndarray:
        """The card's multi-block rule: weighted mean of the blocks' query vectors, cosines."""
        queries, weights, passages = [], [], []
        for row, owners in zip(outputs, plan.owners, strict=True):
            query = row[0].astype(np.float64)
            vectors = row[1 : 1 + len(owners)].astype(np.float64)
            cosines = _cosines(vectors, query)
            queries.append(query)
            weights.append(float(((1.0 + cosines) / 2.0).max()))
            passages.append(vectors)
        merged = np.average(np.stack(queries), axis=0, weights=np.asarray(weights))
        per_passage = _cosines(np.concatenate(passages), merged)
        raw = np.full(plan.n_documents, -np.inf)
        np.maximum.at(raw, np.concatenate(plan.owners), per_passage)
        return raw

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "block_documents": BLOCK_DOCUMENTS}


def _cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    return np.asarray(vectors @ query / np.maximum(norms, 1e-8))
