"""What a served model is, before and after its weights are found on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_NAMES = frozenset({"builtin", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user names it: a hub id, a local directory or `builtin`.

    `served_name` is what API clients put in the request's `model` field; `family` names the
    model family when detection cannot be sure (see `rerankd.families`); `instruction` is the
    model's default instruction, for families that take one; `family_options` the model's
    defaults for its family's request fields (e.g. a layerwise model's `cutoff_layers`).
    `hub_id` is a registration's `model_id` where its source is a directory: the id an error
    tells the user to download.
    """

    source: str
    served_name: str | None = None
    revision: str | None = None
    family: str | None = None
    instruction: str | None = None
    family_options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    hub_id: str | None = field(default=None, compare=False)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        family: str | None = None,
        instruction: str | None = None,
        family_options: dict[str, Any] | None = None,
    ) -> ModelSpec:
        """Parse `SOURCE`, `SOURCE=NAME` or `SOURCE@REVISION=NAME` from the command line."""
        text = text.strip()
        if not text:
            raise ValueError("a model spec may not be empty")
        source, _, name = text.partition("=")
        source, _, revision = source.partition("@")
        return cls(
            source=source.strip(),
            served_name=name.strip() or None,
            revision=revision or None,
            family=family,
            instruction=instruction,
            family_options=dict(family_options or {}),
        )

    @property
    def name(self) -> str:
        if self.served_name:
            return self.served_name
        if self.source in BUILTIN_NAMES:
            return "builtin"
        path = Path(self.source)
        return path.name if path.is_dir() else self.source


@dataclass(frozen=True)
class ResolvedModel:
    """A model whose files are on local disk, with the revision that identifies its weights.

    `settings_hash` identifies the other files its graph may depend on (config.json, module
    configs, the tokenizer's): with the revision, it keys its ONNX export, its cached scores
    and vectors (`rerankd.engine.identity`) and its bf16 verdict.
    """

    name: str
    source: str
    path: Path
    revision: str
    family: str  # the name of the model family that serves it (`rerankd.families.FAMILIES`)
    settings_hash: str
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    instruction: str | None = None  # the model's default instruction, if its family takes one
    # The model's defaults for its family's request fields (`ModelFamily.option_fields`).
    family_options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def max_positions(self) -> int:
        """The longest sequence the model's position embeddings allow."""
        # Multimodal configs (Qwen3-VL) keep the decoder's limit in their text_config.
        text = self.config.get("text_config") or {}
        positions = int(
            self.config.get("max_position_embeddings", text.get("max_position_embeddings", 512))
        )
        # RoBERTa-family models reserve padding_idx + 1 positions.
        if self.config.get("model_type") in {"xlm-roberta", "roberta", "camembert"}:
            positions -= int(self.config.get("pad_token_id", 1)) + 1
        return positions
