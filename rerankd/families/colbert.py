"""ColBERT (late interaction) in PyLate's format: one normalised vector per token, MaxSim.

Reproduces PyLate's `ColBERT.encode` and `colbert_scores`, read from the model's own files
(`config_sentence_transformers.json`, `modules.json`, the `Dense` modules):

- A query is `[CLS] [Q] query [SEP]` cut to `query_length`, then expanded with `[MASK]` up to
  `query_length` (PyLate pads queries with the mask token). The expansion tokens are masked
  out of attention unless `attend_to_expansion_tokens`, yet every query position keeps its
  vector, so a query always has exactly `query_length` vectors.
- A document is `[CLS] [D] document [SEP]` cut to `document_length` (or chunked per the
  long-document policy); its vectors skip the skiplist tokens (punctuation by default).
- The encoder's last hidden states go through the `Dense` projections (PyLate runs them
  without activation) and are L2-normalised per token.
- The raw score is MaxSim: for each query vector its best dot product with the document's
  vectors, summed. It lies in [-query_length, query_length]; the relevance is
  (raw / query_length + 1) / 2, the mean best cosine mapped to [0, 1].

A chunked document scores as its best chunk. Each document is scored on its own vectors only:
PyLate's `rank.rerank` pads a list's documents with zero vectors, which floors a query token's
best match at 0 for the shorter documents of the list; `colbert_scores_pairwise` (and rerankd)
do not, so a document's score never depends on the other documents of a request.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rerankd.engine.backend import Batch, PaddedBatch
from rerankd.engine.plan import LongDocPolicy, ScoringPlan, windows
from rerankd.errors import UnsupportedModel
from rerankd.families.base import ModelFamily
from rerankd.families.clip import special_id

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel


@dataclass(frozen=True, slots=True, eq=False)
class TokenItem:
    """One ColBERT input: its ids, attention mask, and which positions keep their vector."""

    input_ids: list[int]
    type_ids: list[int]
    attention: list[int]
    keep: np.ndarray  # bool, one per position

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class ColbertSettings:
    """What PyLate reads from `config_sentence_transformers.json` (its defaults otherwise)."""

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    attend_to_expansion_tokens: bool = False
    skiplist_words: tuple[str, ...] = tuple(string.punctuation)
    lowercase: bool = False  # sentence_bert_config.json's do_lower_case

    @classmethod
    def read(cls, path: Path) -> ColbertSettings:
        config = _json(path / "config_sentence_transformers.json")
        defaults = cls()
        skiplist = config.get("skiplist_words")
        return cls(
            query_prefix=str(config.get("query_prefix") or defaults.query_prefix),
            document_prefix=str(config.get("document_prefix") or defaults.document_prefix),
            query_length=int(config.get("query_length") or defaults.query_length),
            document_length=int(config.get("document_length") or defaults.document_length),
            attend_to_expansion_tokens=bool(config.get("attend_to_expansion_tokens") or False),
            skiplist_words=tuple(skiplist) if skiplist else defaults.skiplist_words,
            lowercase=bool(_json(path / "sentence_bert_config.json").get("do_lower_case")),
        )


def dense_dirs(path: Path) -> list[Path]:
    """The projection modules in `modules.json`, in the order they run."""
    modules = _json_list(path / "modules.json")
    return [
        path / str(module.get("path", ""))
        for module in modules
        if str(module.get("type", "")).endswith("Dense")
    ]


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """Sum over query vectors of the best dot product with a document vector."""
    if len(document) == 0:
        return 0.0
    similarities = query.astype(np.float32, copy=False) @ document.astype(np.float32, copy=False).T
    return float(similarities.max(axis=1).astype(np.float64).sum())


class Colbert(ModelFamily):
    name = "colbert"
    summary = "ColBERT late interaction (PyLate format): token vectors, MaxSim, cached documents"
    reference = "PyLate ColBERT.encode + colbert_scores (MaxSim)"
    scoring = "late_interaction"
    onnx_refusal = "its token-vector output is not exported to ONNX yet"
    default_max_length = 512

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        modules = _json_list(model.path / "modules.json")
        if any(str(m.get("type", "")).startswith("pylate.") for m in modules):
            return True
        config = _json(model.path / "config_sentence_transformers.json")
        return config.get("similarity_fn_name") == "MaxSim"

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        if not dense_dirs(model.path):
            raise UnsupportedModel(
                f"{model.path} has no Dense projection in modules.json; rerankd serves "
                "ColBERT models saved in PyLate's format"
            )
        settings = ColbertSettings.read(model.path)
        from tokenizers import Tokenizer

        file = model.path / "tokenizer.json"
        if file.is_file():
            tokenizer = Tokenizer.from_file(str(file))
            for prefix in (settings.query_prefix, settings.document_prefix):
                if tokenizer.token_to_id(prefix) is None:
                    raise UnsupportedModel(
                        f"{model.path}: the ColBERT prefix {prefix!r} is not in the tokenizer's "
                        "vocabulary (PyLate adds it before saving a model)"
                    )

    @functools.cached_property
    def settings(self) -> ColbertSettings:
        return ColbertSettings.read(self.model.path)

    @functools.cached_property
    def mask_id(self) -> int:
        return special_id(self.model.path, "mask_token", self.pad_id)

    @functools.cached_property
    def _prefix_ids(self) -> tuple[int, int]:
        tokenizer = self.tokenizer
        ids = [
            tokenizer.token_id(p)
            for p in (self.settings.query_prefix, self.settings.document_prefix)
        ]
        if ids[0] is None or ids[1] is None:
            raise UnsupportedModel(f"{self.model.path}: a ColBERT prefix is not in the vocabulary")
        return ids[0], ids[1]

    @functools.cached_property
    def skiplist(self) -> frozenset[int]:
        """Skiplist word ids; a word not in the vocabulary stands for the unknown token, as in
        PyLate (transformers' `convert_tokens_to_ids`)."""
        unknown = special_id(self.model.path, "unk_token", -1)
        ids = {self.tokenizer.token_id(word) for word in self.settings.skiplist_words}
        return frozenset(unknown if i is None else i for i in ids) - {-1}

    @property
    def query_length(self) -> int:
        return min(self.settings.query_length, self.limits.max_length)

    @property
    def document_length(self) -> int:
        return min(self.settings.document_length, self.limits.max_length)

    def _texts(self, texts: list[str]) -> list[list[int]]:
        # sentence-transformers strips (and may lowercase) every text before tokenizing.
        cleaned = [t.strip().lower() if self.settings.lowercase else t.strip() for t in texts]
        return self.tokenizer.encode(cleaned)

    def _item(self, window: list[int], prefix: int) -> tuple[list[int], list[int]]:
        """`[CLS] prefix window [SEP]`: PyLate inserts the prefix after the first token."""
        sequence = self.tokenizer.single(window)
        ids = sequence.input_ids[:1] + [prefix] + sequence.input_ids[1:]
        types = sequence.type_ids[:1] + [0] + sequence.type_ids[1:]
        return ids, types

    def query_item(self, query: str) -> TokenItem:
        """The query, cut and expanded with the mask token to `query_length`."""
        length = self.query_length
        room = max(0, length - 1 - self.tokenizer.single_specials)
        ids, types = self._item(self._texts([query])[0][:room], self._prefix_ids[0])
        real = len(ids)
        expansion = length - real
        attention = (
            [1] * length
            if self.settings.attend_to_expansion_tokens
            else [1] * real + [0] * expansion
        )
        return TokenItem(
            ids + [self.mask_id] * expansion,
            types + [0] * expansion,
            attention,
            np.ones(length, dtype=bool),
        )

    @property
    def document_room(self) -> int:
        return max(1, self.document_length - 1 - self.tokenizer.single_specials)

    def document_items(self, documents: list[str], policy: LongDocPolicy) -> list[list[TokenItem]]:
        """Each document's items: one (truncated) or its chunks, per the policy."""
        room = self.document_room
        if policy.max_tokens_per_doc is not None:
            room = min(room, policy.max_tokens_per_doc)
        made = []
        for index, ids in enumerate(self._texts(documents)):
            items = []
            for window in windows(ids, room, policy, index):
                full, types = self._item(window, self._prefix_ids[1])
                keep = np.fromiter(
                    (i not in self.skiplist for i in full), dtype=bool, count=len(full)
                )
                items.append(TokenItem(full, types, [1] * len(full), keep))
            made.append(items)
        return made

    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        """The query (owner -1), then every document's items; combined by MaxSim."""
        items: list[Any] = [self.query_item(query)]
        owners = [-1]
        for index, chunks in enumerate(self.document_items(documents, policy)):
            items.extend(chunks)
            owners.extend([index] * len(chunks))
        return ScoringPlan(items, np.asarray(owners, dtype=np.int64), len(documents), combine_rows)

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        """A batch of items -> an object array with each item's kept vectors, float32 [n, dim].

        Items have different lengths, so the batch is padded to its longest item (with the
        mask token, as PyLate pads) and each item's row is cut back to its own positions
        before the skiplist is applied; the batcher then carries one array per item.
        """
        longest = max(len(item) for item in items)
        shape = (len(items), longest)
        input_ids = np.full(shape, self.mask_id, dtype=np.int64)
        attention = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for row, item in enumerate(items):
            input_ids[row, : len(item)] = item.input_ids
            attention[row, : len(item)] = item.attention
            types[row, : len(item)] = item.type_ids
        vectors = backend_run(PaddedBatch(input_ids, attention, types))
        rows = np.empty(len(items), dtype=object)
        for row, item in enumerate(items):
            rows[row] = np.ascontiguousarray(vectors[row, : len(item)][item.keep], dtype=np.float32)
        return rows

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModel

        from rerankd.families.heads import TokenVectorsHead, load_dense, load_pretrained

        encoder = load_pretrained(AutoModel, self.model, dtype, attention)
        denses = [load_dense(path, dtype) for path in dense_dirs(self.model.path)]
        return TokenVectorsHead(encoder, denses).eval()

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """MaxSim / query_length is the mean best cosine in [-1, 1]; mapped to [0, 1]."""
        return np.clip((raw / self.query_length + 1.0) / 2.0, 0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "query_length": self.query_length,
            "document_length": self.document_length,
        }


def combine_rows(outputs: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Vectors per item (the query first, owner -1) -> each document's best chunk MaxSim."""
    query = outputs[0]
    scores = np.full(count, -np.inf)
    for row, owner in zip(outputs[1:], owners[1:], strict=True):
        scores[owner] = max(scores[owner], maxsim(query, row))
    return scores


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def _json_list(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    value = json.loads(path.read_text(encoding="utf-8"))
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
