"""What a registration and a launch say, validated once at the edge.

A registration is a named model spec. Xinference's custom-rerank JSON is accepted as it is
(`model_name`, `type`, `language`, `model_id`, `model_uri`, `max_tokens`, `model_specs`, ...);
rerankd's own fields (`family`, `instruction`, `max_length`, `backend`, `dtype`) sit beside
them. Unknown fields are kept, so a registration reads back the way it was written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rerankd.engine.options import EngineOptions
from rerankd.models import ModelSpec
from rerankd.models.spec import BUILTIN_NAMES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"
Origin = Literal["builtin", "startup", "file", "api"]


class Registration(BaseModel):
    """A named model: where its files are and how it runs by default."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model_name: str = Field(pattern=NAME_PATTERN, description="The registered name.")
    type: str | None = Field(None, description="Xinference's rerank type (normal, LLM-based...).")
    language: list[str] = Field(default_factory=list, description="Language tags.")
    model_id: str | None = Field(None, description="Hub id.")
    model_uri: str | None = Field(
        None, validate_default=True, description="Local directory (file:// or a path)."
    )
    model_revision: str | None = Field(None, description="Hub revision.")
    max_tokens: int | None = Field(None, ge=8, description="Xinference: the model's own limit.")
    # rerankd's own options.
    family: str | None = Field(None, description="Model family (default: detected).")
    instruction: str | None = Field(None, description="Default instruction (instructed families).")
    family_options: dict[str, Any] | None = Field(
        None,
        description='Defaults for the family\'s request fields, e.g. {"cutoff_layers": 28} '
        "for a layerwise bge reranker.",
    )
    max_length: int | None = Field(None, ge=8, description="Tokens per pair.")
    backend: Literal["auto", "torch", "onnx"] | None = Field(
        None, description="auto, torch or onnx (default: the server's --backend)."
    )
    dtype: str | None = Field(None, description="float32, float16, bfloat16 or int8.")
    calibration: str | None = Field(
        None, description="calibration.json (rerankd calibrate) made for these weights."
    )

    @model_validator(mode="before")
    @classmethod
    def _well_formed(cls, data: Any) -> Any:
        """Every string well-formed Unicode and bounded, extra fields included: a lone
        surrogate kept here would break every listing and every save after it."""
        if isinstance(data, dict):
            check_strings(data, "")
        return data

    @model_validator(mode="before")
    @classmethod
    def _flatten_model_specs(cls, data: Any) -> Any:
        """Xinference's newer format nests the source under `model_specs`; take the first."""
        if isinstance(data, dict) and not (data.get("model_id") or data.get("model_uri")):
            specs = data.get("model_specs")
            if isinstance(specs, list) and specs and isinstance(specs[0], dict):
                first = specs[0]
                data = {
                    **data,
                    **{k: first[k] for k in ("model_id", "model_uri") if first.get(k)},
                    "model_revision": data.get("model_revision") or first.get("model_revision"),
                }
        return data

    @field_validator("language", mode="before")
    @classmethod
    def _language_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("model_name")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        if any(part in {".", ".."} for part in value.split("/")):
            raise ValueError("a name may not contain '.' or '..' path segments")
        return value

    @field_validator("model_uri")
    @classmethod
    def _has_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not (value or info.data.get("model_id")):
            raise ValueError("model_uri or model_id is required: where the model's files are")
        return value

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        from rerankd.errors import RerankError
        from rerankd.families import check_family_name

        try:
            return check_family_name(value)
        except RerankError as exc:
            raise ValueError(exc.message) from None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # onnx on cuda accepts every dtype, so this checks only the name.
        return EngineOptions(backend="onnx", dtype=value, device="cuda").dtype  # type: ignore[arg-type]

    @property
    def source(self) -> str:
        """What `rerankd.families.resolve` is given: the local directory first, else the hub id."""
        if self.model_uri:
            uri = self.model_uri
            return uri.removeprefix("file://") if uri.startswith("file://") else uri
        return self.model_id or ""

    @property
    def model_spec(self) -> ModelSpec:
        """What `resolve` is given: the registration's family and default instruction with it."""
        return ModelSpec(
            source=self.source,
            served_name=self.model_name,
            revision=self.model_revision,
            family=self.family,
            instruction=self.instruction,
            family_options=dict(self.family_options or {}),
            hub_id=self.model_id if self.model_uri and self.model_id else None,
        )

    def public(self) -> dict[str, Any]:
        """The registration as it reads back: what was given, nulls left out."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Registration:
        """A `--model SOURCE[=NAME]` from the command line, as a registration.

        A missing directory or a malformed id is said so here, in plain words, before the
        name (taken from it) could fail the registration's pattern."""
        from rerankd.models.missing import check_source

        check_source(spec)
        if not re.match(NAME_PATTERN, spec.name):
            raise ValueError(
                f"--model {spec.source}={spec.served_name}: the served name must start with a "
                "letter or digit and hold only letters, digits, '.', '_', '/' and '-' (at most "
                "200 characters); choose another after '='"
            )
        local = Path(spec.source).expanduser()
        builtin = spec.source in BUILTIN_NAMES
        return cls(
            model_name=spec.name,
            model_uri=str(local) if not builtin and local.is_dir() else None,
            model_id="builtin" if builtin else None if local.is_dir() else spec.source,
            model_revision=spec.revision,
            language=["en"] if builtin else [],
            family=spec.family,
            instruction=spec.instruction,
            family_options=dict(spec.family_options) or None,
        )


MAX_STRING = 1024  # characters in any string field but the instruction
MAX_INSTRUCTION = 16_000
MAX_ITEMS = 256  # entries of any list or object
MAX_DEPTH = 8  # nesting of extra fields


def check_strings(value: Any, where: str, depth: int = 0) -> None:
    """`ValueError` naming the field for a lone surrogate, an over-long string or list, or
    nesting deeper than a registration needs."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or 'the registration'} nests more than {MAX_DEPTH} levels")
    if isinstance(value, str):
        limit = MAX_INSTRUCTION if where == "instruction" else MAX_STRING
        if len(value) > limit:
            raise ValueError(f"{where} has {len(value):,} characters; at most {limit:,}")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{where} is not valid Unicode: a lone surrogate at character {exc.start}"
                ) from None
    elif isinstance(value, (list, tuple, dict)):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"{where or 'the registration'} has more than {MAX_ITEMS} entries")
        if isinstance(value, dict):
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                check_strings(key, f"{where or 'the registration'} key", depth + 1)
                check_strings(item, name, depth + 1)
        else:
            for index, item in enumerate(value):
                check_strings(item, f"{where}[{index}]", depth + 1)


def builtin_registration() -> Registration:
    return Registration(model_name="builtin", model_id="builtin", language=["en"], type="normal")


_GPU = re.compile(r"^cuda(:\d+)?$")


class LaunchRequest(BaseModel):
    """`POST /v1/models`: Xinference's launch body (its many other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model_name: str = Field(min_length=1, description="A registered name.")
    model_uid: str | None = Field(
        None, pattern=NAME_PATTERN, description="The served name (default: model_name)."
    )
    model_type: str | None = Field("rerank", description="Only rerank models are served here.")
    replica: int | None = Field(None, ge=1, le=64, description="Replicas (Xinference's name).")
    replicas: int | None = Field(None, ge=1, le=64, description="Replicas.")
    gpu_idx: int | list[int] | None = Field(None, description="Xinference: GPU indexes.")
    device: str | list[str] | None = Field(
        None, description="Devices: cpu, cuda:0,cuda:1 (replicas go round-robin over them)."
    )
    threads: int | None = Field(None, ge=1, le=1024, description="Inference threads per replica.")
    backend: Literal["auto", "torch", "onnx"] | None = None
    dtype: str | None = None
    max_length: int | None = Field(None, ge=8)

    @field_validator("model_type")
    @classmethod
    def _rerank_only(cls, value: str | None) -> str | None:
        if value is not None and value.lower() != "rerank":
            raise ValueError(f"rerankd serves rerank models only, not {value!r}")
        return value

    @field_validator("gpu_idx")
    @classmethod
    def _non_negative(cls, value: int | list[int] | None) -> int | list[int] | None:
        indexes = [value] if isinstance(value, int) else value or []
        if any(i < 0 for i in indexes) or (isinstance(value, list) and not value):
            raise ValueError("GPU indexes are non-negative integers, at least one")
        return value

    @field_validator("device")
    @classmethod
    def _known_devices(cls, value: str | list[str] | None) -> str | list[str] | None:
        for device in split_devices(value):
            if device != "cpu" and not _GPU.match(device):
                raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _one_placement(self) -> LaunchRequest:
        if self.gpu_idx is not None and self.device is not None:
            raise ValueError("give gpu_idx or device, not both")
        if self.replica is not None and self.replicas is not None and self.replica != self.replicas:
            raise ValueError("replica and replicas disagree")
        return self

    @property
    def devices(self) -> list[str] | None:
        if self.gpu_idx is not None:
            indexes = [self.gpu_idx] if isinstance(self.gpu_idx, int) else self.gpu_idx
            return [f"cuda:{i}" for i in indexes]
        return split_devices(self.device) or None

    @property
    def replica_count(self) -> int | None:
        return self.replicas or self.replica


def split_devices(value: str | list[str] | None) -> list[str]:
    items = [value] if isinstance(value, str) else value or []
    return [part.strip() for item in items for part in item.split(",") if part.strip()]
