"""bge's layerwise rerankers: a score read at a chosen layer, with optional token compression.

- `BgeLayerwiseReranker` (bge-reranker-v2-minicpm-layerwise, `LayerWiseMiniCPMForCausalLM`):
  a MiniCPM decoder with one 1-logit head per layer from `start_layer` to the last. The score
  at cutoff layer k is the head of layer k on the final-normed hidden state after k layers, at
  the last real token. Layers after k never run.
- `BgeLightweightReranker` (bge-reranker-v2.5-gemma2-lightweight, `CostWiseGemmaForCausalLM`):
  a Gemma2 decoder with the same kind of heads, which can also shrink the passage before chosen
  layers (`compress_layers`): every `compress_ratio` consecutive passage tokens become their
  mean, the query and the prompt stay as they are.

Both read FlagEmbedding's prompt (`<bos>A: {query}\\nB: {passage}\\n{prompt}`, as
bge-reranker-v2-gemma) and reproduce `LayerWiseFlagLLMReranker` / `LightWeightFlagLLMReranker`.
rerankd runs the architecture with transformers' Llama and Gemma2 classes; the checkpoints'
own code is never executed. The choices (`LayerOptions`) come per request (the extension fields
`cutoff_layers`, `compress_ratio`, `compress_layers`) over the model's defaults, FlagEmbedding's
(the last layer, no compression).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rerankd.engine.backend import Batch
from rerankd.engine.tokenize import Sequence
from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import Limits, PaddingSide, QuerySide
from rerankd.families.yes_no import BgeGemmaReranker

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel

COMPRESS_RATIOS = (1, 2, 4, 8)  # what LightWeightFlagLLMReranker documents


@dataclass(frozen=True)
class LayerOptions:
    """Which layer's head scores, and how the passage is compressed (lightweight only).

    FlagEmbedding accepts a list of cutoff layers and returns one score list per layer; a
    ranking needs one score, so one layer is chosen.
    """

    cutoff_layer: int
    compress_ratio: int = 1
    compress_layers: tuple[int, ...] = (8,)

    def cache_key(self) -> tuple[object, ...]:
        return ("layers", self.cutoff_layer, self.compress_ratio, list(self.compress_layers))


@dataclass(frozen=True, slots=True)
class LayerSequence(Sequence):
    """A prompt sequence and where its passage lies: the compression needs the spans."""

    query_length: int = 0  # tokens before the passage (<bos>, "A: query", "\\n")
    prompt_length: int = 0  # tokens after it ("\\n", the prompt)
    options: LayerOptions = LayerOptions(0)


@dataclass(frozen=True)
class LayerBatch:
    """Right-padded sequences of one `LayerOptions`, with the spans and choices as arrays."""

    arrays: dict[str, np.ndarray]

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: self.arrays[name] for name in names}


INPUT_NAMES = [
    "input_ids",
    "attention_mask",
    "query_lengths",
    "prompt_lengths",
    "cutoff_layer",
    "compress_ratio",
    "compress_layers",
]


class _LayerwiseFamily(BgeGemmaReranker):
    """FlagEmbedding's bge prompt, scored by one layer's head (see the module docstring)."""

    # The compression (as FlagEmbedding's) needs each passage at the same place in its row.
    padding_side: ClassVar[PaddingSide] = "right"
    onnx_refusal: ClassVar[str | None] = (
        "the cutoff layer and the compression are chosen per batch, so the graph's layer count "
        "and sequence length depend on input values; torch only"
    )
    int8_refusal: ClassVar[str | None] = "runs in torch only (see onnx_refusal)"
    architecture: ClassVar[str]

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        return cls.architecture in (model.config.get("architectures") or [])

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        if cls.architecture not in (model.config.get("architectures") or []):
            raise UnsupportedModel(
                f"{model.path} is not a {cls.architecture} checkpoint; the {cls.name} family "
                "reads its per-layer heads"
            )

    @property
    def input_names(self) -> list[str]:
        return INPUT_NAMES

    @property
    def layer_count(self) -> int:
        return int(self.model.config["num_hidden_layers"])

    def scored_layers(self) -> list[int]:
        """The layers that have a head (FlagEmbedding drops any other cutoff layer)."""
        raise NotImplementedError

    option_fields: ClassVar[tuple[str, ...]] = ("cutoff_layers",)
    _chosen: LayerOptions | None = None  # set on the copies `with_options` makes

    def __init__(self, model: ResolvedModel, limits: Limits) -> None:
        super().__init__(model, limits)
        try:  # the model's own defaults are checked when it loads, not at its first request
            self.default_options = self.options_for({})
        except InvalidInput as exc:
            raise UnsupportedModel(f"model {model.name!r} family_options: {exc}") from None

    def options_for(self, requested: Mapping[str, object]) -> LayerOptions:
        """A request's fields over the model's defaults (`family_options`), checked."""
        sent = {k: v for k, v in requested.items() if v is not None}
        unknown = sorted(set(sent) - set(self.option_fields))
        if unknown:
            raise InvalidInput(
                f"model {self.model.name!r} ({self.name}) takes no {', '.join(unknown)}; "
                f"its fields are {', '.join(self.option_fields)}"
            )
        sent = {**self.model.family_options, **sent}
        cutoff = sent.get("cutoff_layers")
        ratio = sent.get("compress_ratio")
        layers = sent.get("compress_layers")
        if cutoff is not None and not (_is_int(cutoff) or _int_list(cutoff)):
            raise InvalidInput("cutoff_layers must be a layer number or a list of one")
        if ratio is not None and not _is_int(ratio):
            raise InvalidInput("compress_ratio must be an integer")
        if layers is not None and not _int_list(layers):
            raise InvalidInput("compress_layers must be a list of layer numbers")
        return self.options(cutoff, ratio, layers)  # type: ignore[arg-type]

    def with_options(self, options: Any) -> _LayerwiseFamily:
        bound = copy.copy(self)  # shares the loaded tokenizer
        bound._chosen = options
        return bound

    def options(
        self,
        cutoff_layers: int | list[int] | None,
        compress_ratio: int | None,
        compress_layers: list[int] | None,
    ) -> LayerOptions:
        """A request's choices, checked; what it leaves out comes from the model's defaults."""
        layers = self.scored_layers()
        if isinstance(cutoff_layers, list):
            if len(cutoff_layers) != 1:
                raise InvalidInput(
                    "cutoff_layers: give one layer (a ranking is by one layer's score), "
                    f"one of {layers[0]}..{layers[-1]}"
                )
            cutoff_layers = cutoff_layers[0]
        if cutoff_layers is not None and cutoff_layers not in layers:
            raise InvalidInput(
                f"cutoff_layers: layer {cutoff_layers} has no score head in this model; "
                f"choose one of {_ranges(layers)}"
            )
        if compress_ratio is not None or compress_layers is not None:
            raise InvalidInput(f"model {self.model.name!r} ({self.name}) compresses no tokens")
        return LayerOptions(self.layer_count if cutoff_layers is None else cutoff_layers)

    def sequence(self, side: QuerySide, window: list[int]) -> Sequence:
        ids = side.before + window + side.after
        options = self._chosen or self.default_options
        return LayerSequence(ids, [0] * len(ids), len(side.before), len(side.after), options)

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        """Items of one `LayerOptions` run together; rows come back in the items' order."""
        groups: dict[LayerOptions, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.options, []).append(index)
        out = np.empty(len(items), dtype=np.float32)
        for options, indices in groups.items():
            out[indices] = backend_run(self._batch([items[i] for i in indices], options))
        return out

    def _batch(self, items: list[LayerSequence], options: LayerOptions) -> LayerBatch:
        longest = max(len(s) for s in items)
        input_ids = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, item in enumerate(items):
            input_ids[row, : len(item)] = item.input_ids
            attention_mask[row, : len(item)] = 1
        compress = np.zeros(self.layer_count + 1, dtype=np.int64)
        compress[[i for i in options.compress_layers if 0 < i < len(compress)]] = 1
        cutoff = options.cutoff_layer
        return LayerBatch(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "query_lengths": np.asarray([s.query_length for s in items], dtype=np.int64),
                "prompt_lengths": np.asarray([s.prompt_length for s in items], dtype=np.int64),
                "cutoff_layer": np.asarray([cutoff], dtype=np.int64),
                "compress_ratio": np.asarray([options.compress_ratio], dtype=np.int64),
                "compress_layers": compress,
            }
        )

    def describe(self) -> dict[str, Any]:
        options = self.default_options
        return {
            **super().describe(),
            "cutoff_layers": self.scored_layers(),
            "default_cutoff_layer": options.cutoff_layer,
        }


class BgeLayerwiseReranker(_LayerwiseFamily):
    name = "bge-reranker-layerwise"
    summary = (
        "bge-reranker-v2-minicpm-layerwise: MiniCPM, the head of the chosen layer "
        "(cutoff_layers) after FlagEmbedding's prompt"
    )
    reference = "FlagEmbedding LayerWiseFlagLLMReranker.compute_score"
    architecture = "LayerWiseMiniCPMForCausalLM"

    def scored_layers(self) -> list[int]:
        start = int(self.model.config.get("start_layer", 8))
        return list(range(start, self.layer_count + 1))

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from rerankd.families.layerwise_heads import minicpm_layerwise_head

        return minicpm_layerwise_head(self.model, dtype, attention).eval()


class BgeLightweightReranker(_LayerwiseFamily):
    name = "bge-reranker-lightweight"
    summary = (
        "bge-reranker-v2.5-gemma2-lightweight: Gemma2, the chosen layer's head (cutoff_layers) "
        "and passage compression (compress_ratio, compress_layers)"
    )
    reference = "FlagEmbedding LightWeightFlagLLMReranker.compute_score"
    architecture = "CostWiseGemmaForCausalLM"
    default_instruction = "Predict whether passage B contains an answer to query A."
    option_fields = ("cutoff_layers", "compress_ratio", "compress_layers")

    def scored_layers(self) -> list[int]:
        config = self.model.config
        start, step = int(config.get("start_layer", 28)), int(config.get("layer_sep", 28))
        return list(range(start, self.layer_count + 1, step))

    def options(
        self,
        cutoff_layers: int | list[int] | None,
        compress_ratio: int | None,
        compress_layers: list[int] | None,
    ) -> LayerOptions:
        cutoff = super().options(cutoff_layers, None, None).cutoff_layer
        ratio = 1 if compress_ratio is None else compress_ratio
        if ratio not in COMPRESS_RATIOS:
            raise InvalidInput(
                f"compress_ratio: {ratio} is not one of {', '.join(map(str, COMPRESS_RATIOS))}"
            )
        if compress_layers is None:  # FlagEmbedding's default, whatever the model's depth
            return LayerOptions(cutoff, ratio, (8,))
        chosen = tuple(sorted(set(compress_layers)))
        bad = [i for i in chosen if not 0 <= i < self.layer_count]
        if bad or not chosen:
            raise InvalidInput(
                f"compress_layers: give layers in 0..{self.layer_count - 1} (not {bad or '[]'})"
            )
        return LayerOptions(cutoff, ratio, chosen)

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from rerankd.families.layerwise_heads import gemma2_lightweight_head

        return gemma2_lightweight_head(self.model, dtype).eval()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _ranges(layers: list[int]) -> str:
    if len(layers) > 1 and all(b - a == 1 for a, b in zip(layers, layers[1:], strict=False)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))
