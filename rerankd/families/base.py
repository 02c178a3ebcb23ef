"""The contract every model family fulfils, and the two shapes families come in.

A family owns everything that differs between kinds of reranking model: recognising one from
its files, turning a (query, documents) request into sequences, the torch head that yields one
output row per sequence, turning those rows back into one raw score per document, and
normalising raw scores, and naming its scoring path (`scoring`, see rerankd.scoring). The
engine, both backends and the batcher see only "items in, one row out per item".

Two shapes here cover most families (listwise.py and colbert.py hold the others):

- `PairFamily`: the query and a document are read together and one raw score comes out per
  sequence (cross-encoders, causal yes/no rerankers). A document's score is its best chunk's.
- `EmbeddingFamily`: the query and each document are embedded apart and scored by cosine
  (bi-encoders). The query is the plan's first sequence, with owner -1.

A family module never imports torch at import time: the server's ONNX path must not hold
torch. Torch code lives in `rerankd/families/heads.py` and is imported inside `torch_head`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from rerankd.documents import TEXT_ONLY, Loaded, Modalities, TextDocument
from rerankd.engine.backend import Batch, PaddedBatch
from rerankd.engine.plan import LongDocPolicy, ScoringPlan, windows
from rerankd.engine.tokenize import Sequence, TextTokenizer
from rerankd.errors import InvalidInput, UnsupportedModel

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel

PaddingSide = Literal["left", "right"]
# How a family's outputs become scores: the path in rerankd.scoring that serves it.
ScoringKind = Literal["pairwise", "embedding", "listwise", "late_interaction"]


class FamilyOptions(Protocol):
    """A family's per-request choices (e.g. a layerwise model's cutoff layer), resolved."""

    def cache_key(self) -> tuple[object, ...]:
        """Every choice that changes a score (part of the score cache's key)."""
        ...


ENCODER_TYPES = frozenset({"bert", "xlm-roberta", "roberta", "camembert", "electra"})


@dataclass(frozen=True)
class Limits:
    """Token limits of one loaded model: the longest sequence and the query's share of it."""

    max_length: int
    query_cap: int


class ModelFamily(ABC):
    """One kind of reranking model. Subclasses set the class attributes and the hooks.

    An instance is bound to one model on disk and its limits; it is cheap until the tokenizer
    is first used, so the ONNX exporter can build one just for `torch_head`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `--help` and the docs
    reference: ClassVar[str]  # the implementation whose scores this family reproduces
    # The largest deviation from the reference the tests allow or measured (docs/families.md).
    deviation: ClassVar[str] = "see docs/families.md"
    takes_instruction: ClassVar[bool] = False
    default_instruction: ClassVar[str | None] = None
    default_max_length: ClassVar[int] = 512
    padding_side: ClassVar[PaddingSide] = "right"
    # Why int8 is refused for this family, or None when it is allowed.
    int8_refusal: ClassVar[str | None] = None
    # Why this family runs in torch only (no ONNX export), or None.
    onnx_refusal: ClassVar[str | None] = None
    # Where a request's instruction+query prefix runs once (prefix.py), or why it cannot;
    # None: the family has no such prefix (`rerankd families` prints it where set).
    shared_prefix: ClassVar[str | None] = None
    # What the model reads, as the query and as documents (a 400 naming the model otherwise).
    modalities: ClassVar[Modalities] = TEXT_ONLY
    # The scoring path (rerankd.scoring) that turns this family's outputs into scores.
    scoring: ClassVar[ScoringKind]

    def __init__(self, model: ResolvedModel, limits: Limits) -> None:
        self.model = model
        self.limits = limits
        # Set by the engine when the backend's head runs a shared prefix once (prefix.py).
        self.share_prefix = False
        unknown = sorted(set(model.family_options) - set(self.option_fields))
        if unknown:
            takes = ", ".join(self.option_fields) or "none"
            raise UnsupportedModel(
                f"model {model.name!r} ({self.name}) has family_options it does not take: "
                f"{', '.join(unknown)} (it takes: {takes})"
            )

    # Recognising a model ------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        """Whether the model's config (and name, where needed) is unmistakably this family's."""

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        """Raise `UnsupportedModel` if the model is this family's but cannot be served."""
        return None

    # Inputs -------------------------------------------------------------------------------

    @functools.cached_property
    def tokenizer(self) -> TextTokenizer:
        return TextTokenizer.from_dir(self.model.path)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def uses_type_ids(self) -> bool:
        return int(self.model.config.get("type_vocab_size", 1)) > 1

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if self.uses_type_ids else [])

    def onnx_optimizer(self) -> str | None:
        """ONNX Runtime's transformer-optimizer model type for this model's graph.

        None: only ONNX Runtime's generic optimizations apply (its fusions are written for
        BERT-like encoders).
        """
        return "bert" if self.model.config.get("model_type") in ENCODER_TYPES else None

    def instruction_for(self, requested: str | None) -> str | None:
        """The instruction a request runs with: its own, the model's default, the family's."""
        if requested is not None and not self.takes_instruction:
            raise InvalidInput(
                f"model {self.model.name!r} ({self.name}) takes no instruction; "
                "send the request without one"
            )
        if not self.takes_instruction:
            return None
        if requested is not None and requested.strip():
            return requested
        return self.model.instruction or self.default_instruction

    # Extension fields a request may send for this family (e.g. `cutoff_layers`).
    option_fields: ClassVar[tuple[str, ...]] = ()

    def options_for(self, requested: Mapping[str, object]) -> FamilyOptions | None:
        """A request's family fields, checked and completed with the model's defaults; None
        for a family that takes none (then any such field is a 400)."""
        sent = sorted(k for k, v in requested.items() if v is not None)
        if sent:
            raise InvalidInput(
                f"model {self.model.name!r} ({self.name}) takes no {', '.join(sent)}; "
                "send the request without it"
            )
        return None

    def with_options(self, options: FamilyOptions) -> ModelFamily:
        """This family planning with `options` (from `options_for`)."""
        return self

    @abstractmethod
    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        """The sequences to run for one request; `instruction` comes from `instruction_for`."""

    def plan_documents(
        self,
        query: Loaded,
        documents: list[Loaded],
        policy: LongDocPolicy,
        instruction: str | None,
    ) -> ScoringPlan:
        """`plan` for typed documents. A text-only family plans from their text (the service
        has refused anything its `modalities` do not list); image families override this."""
        return self.plan(_text(query), [_text(d) for d in documents], policy, instruction)

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        """One batch of plan items -> one output row per item: token sequences, padded.

        A family whose items are not all token sequences (images) collates them itself, and
        may call `backend_run` once per kind of item.
        """
        return backend_run(PaddedBatch.pad(items, self.pad_id, self.padding_side))

    # Outputs ------------------------------------------------------------------------------

    @abstractmethod
    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        """The network with its scoring head: padded batch tensors in, one row per sequence out.

        `attention` is the transformers attention implementation (sdpa for torch, eager for
        the ONNX export, which ONNX Runtime fuses).
        """

    @abstractmethod
    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw document scores -> relevance in [0, 1]."""

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "instruction": self.takes_instruction,
            "default_instruction": self.model.instruction or self.default_instruction,
        }


def _max_per_document(per_sequence: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    scores = np.full(count, -np.inf)
    np.maximum.at(scores, owners, per_sequence)
    return scores


def combine_pairs(outputs: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """One raw score per sequence -> a document's best chunk."""
    return _max_per_document(outputs.astype(np.float64).reshape(-1), owners, count)


def combine_embeddings(outputs: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Row 0 embeds the query, the rest embed chunks: cosine, then each document's best chunk."""
    query, chunks = outputs[0].astype(np.float64), outputs[1:].astype(np.float64)
    return _max_per_document(chunks @ query, owners[1:], count)


def sigmoid(raw: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-raw)))


@dataclass(frozen=True)
class QuerySide:
    """What every sequence of one request shares: the tokens around the document window."""

    before: list[int]  # everything before the document window (template, instruction, query)
    after: list[int]  # everything after it (closing template, prompt)
    room: int  # tokens the document window may take


class PairFamily(ModelFamily):
    """Query and document read together; the raw score is a logit, normalised by sigmoid.

    Subclasses say how a request's query side is built (`query_side`) and, if their template
    is not a plain concatenation, how a query side and a document window become a sequence.
    """

    scoring = "pairwise"

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return sigmoid(raw)

    @abstractmethod
    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        """The tokens every sequence of this request shares, and the room left for a document."""

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.tokenizer.encode(documents)

    def sequence(self, side: QuerySide, window: list[int]) -> Sequence:
        ids = side.before + window + side.after
        return Sequence(ids, [0] * len(ids))

    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        side = self.query_side(query, instruction)
        room = side.room
        if policy.max_tokens_per_doc is not None:
            room = min(room, policy.max_tokens_per_doc)
        if room < 1:
            raise InvalidInput("the query leaves no room for the documents; shorten it")
        plan = _plan(
            [],
            self.document_ids(documents),
            room,
            policy,
            functools.partial(self.sequence, side),
            combine_pairs,
        )
        return self.finish_plan(plan, side)

    def finish_plan(self, plan: ScoringPlan, side: QuerySide) -> ScoringPlan:
        """A last look at the plan, with the query side it was built from (prefix sharing)."""
        return plan


class EmbeddingFamily(ModelFamily):
    """Query and documents embedded apart; the raw score is a cosine, normalised to [0, 1].

    The embedding path caches document embeddings and scores them with `combine_rows`.
    """

    scoring = "embedding"

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((raw + 1.0) / 2.0, 0.0, 1.0)

    def combine_rows(self, outputs: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
        """Embeddings (the query's first, owner -1) -> one raw score per document."""
        return combine_embeddings(outputs, owners, count)

    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        tokenizer = self.tokenizer
        encoded = tokenizer.encode([query, *documents])
        room = self.limits.max_length - tokenizer.single_specials
        query_sequence = tokenizer.single(encoded[0][:room])
        if policy.max_tokens_per_doc is not None:
            room = min(room, policy.max_tokens_per_doc)
        return _plan(
            [query_sequence], encoded[1:], room, policy, tokenizer.single, self.combine_rows
        )


def _text(document: Loaded) -> str:
    if not isinstance(document, TextDocument):
        raise InvalidInput(f"this model reads text only, not an {document.kind}")
    return document.text


def _plan(
    first: list[Sequence],
    documents: list[list[int]],
    room: int,
    policy: LongDocPolicy,
    build: Callable[[list[int]], Sequence],
    combine: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
) -> ScoringPlan:
    sequences = list(first)
    owners = [-1] * len(first)
    for index, ids in enumerate(documents):
        for window in windows(ids, room, policy, index):
            sequences.append(build(window))
            owners.append(index)
    return ScoringPlan(sequences, np.asarray(owners, dtype=np.int64), len(documents), combine)
