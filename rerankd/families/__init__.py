"""Model families: everything kind-specific about a reranking model, one module per family.

`family_class(model)` picks the family when a model loads (an explicit `--family`, else the
first family that recognises the model's config); nothing after that branches on the kind.
To add a family, see docs/architecture.md ("Adding a model family").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerankd.errors import UnsupportedModel
from rerankd.families.base import EmbeddingFamily, Limits, ModelFamily, PairFamily
from rerankd.families.bge_layerwise import BgeLayerwiseReranker, BgeLightweightReranker
from rerankd.families.bi_encoder import BiEncoder
from rerankd.families.clip import Clip
from rerankd.families.colbert import Colbert
from rerankd.families.cross_encoder import CrossEncoder
from rerankd.families.jina_v3 import JinaRerankerV3
from rerankd.families.listwise import ListwiseFamily
from rerankd.families.mxbai import MxbaiRerankV2
from rerankd.families.nemotron import NemotronRerank
from rerankd.families.qwen3_vl import Qwen3VLReranker
from rerankd.families.siglip import Siglip
from rerankd.families.st_logit import SentenceTransformersLogitScore
from rerankd.families.yes_no import BgeGemmaReranker, Qwen3Reranker
from rerankd.families.zerank import ZerankReranker

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel

# Detection order matters: the specific families first, the catch-all bi-encoder last.
FAMILIES: dict[str, type[ModelFamily]] = {
    family.name: family
    for family in (
        SentenceTransformersLogitScore,  # recognised from its saved modules, whatever its name
        JinaRerankerV3,
        BgeLayerwiseReranker,
        BgeLightweightReranker,
        Qwen3VLReranker,
        Qwen3Reranker,
        BgeGemmaReranker,
        MxbaiRerankV2,
        ZerankReranker,
        NemotronRerank,  # before cross-encoder: its architecture ends in ForSequenceClassification
        CrossEncoder,
        Colbert,
        Clip,
        Siglip,
        BiEncoder,
    )
}


def check_family_name(name: str | None) -> str | None:
    """Validate a `--family` value early (at start-up), listing the families."""
    if name is not None and name not in FAMILIES:
        raise UnsupportedModel(
            f"unknown model family {name!r}; the families are: {', '.join(FAMILIES)}"
        )
    return name


def family_class(model: ResolvedModel, requested: str | None = None) -> type[ModelFamily]:
    """The family that serves `model`: the one asked for, else the first that recognises it."""
    if check_family_name(requested) is not None:
        family = FAMILIES[str(requested)]
    else:
        found = next((f for f in FAMILIES.values() if f.recognizes(model)), None)
        if found is None:
            architectures = model.config.get("architectures") or ["(none)"]
            raise UnsupportedModel(
                f"{model.path} has architecture {architectures[0]}, which no model family "
                f"recognises by itself. The families are: {', '.join(FAMILIES)}. "
                "A causal LM reranker needs its prompt format named, e.g. --family "
                "qwen3-reranker or --family bge-reranker-gemma."
            )
        family = found
    family.check(model)
    return family


__all__ = [
    "FAMILIES",
    "BgeGemmaReranker",
    "BgeLayerwiseReranker",
    "BgeLightweightReranker",
    "BiEncoder",
    "Clip",
    "Colbert",
    "CrossEncoder",
    "EmbeddingFamily",
    "JinaRerankerV3",
    "Limits",
    "ListwiseFamily",
    "ModelFamily",
    "MxbaiRerankV2",
    "NemotronRerank",
    "PairFamily",
    "Qwen3Reranker",
    "Qwen3VLReranker",
    "SentenceTransformersLogitScore",
    "Siglip",
    "check_family_name",
    "family_class",
    "ZerankReranker",
]
