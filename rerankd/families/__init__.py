"""Model families: everything kind-specific about a reranking model, one module per family.

`resolve(spec)` finds a model's files (rerankd.models) and picks its family (`family_class`:
an explicit `--family`, else the first family that recognises the model's config);
`bind_family` binds it to the limits an engine runs it under. Nothing after that branches on
the kind: the family names its scoring path (rerankd.scoring). To add a family, see
docs/architecture.md ("Adding a model family").
"""

from __future__ import annotations

import dataclasses

from rerankd.engine.options import EngineOptions
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
from rerankd.models import ModelSpec, ResolvedModel, locate

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


def resolve(spec: ModelSpec) -> ResolvedModel:
    """A spec's files, located, and the family that serves them."""
    found = locate(spec)
    return dataclasses.replace(found, family=family_class(found, spec.family).name)


def bind_family(model: ResolvedModel, options: EngineOptions) -> ModelFamily:
    """The model's family bound to the model and to the limits it runs under."""
    family = FAMILIES[model.family]
    max_length, query_cap = options.limits(family.default_max_length, model.max_positions)
    return family(model, Limits(max_length, query_cap))


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
    "bind_family",
    "check_family_name",
    "family_class",
    "resolve",
    "ZerankReranker",
]
