"""All settings in one object: command-line flags and `RERANKD_*` environment variables.

Built once (by the CLI or by whoever embeds the app) and passed down explicitly; nothing in
rerankd reads the environment at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rerankd.engine.options import EngineOptions, default_batch_tokens, default_cache_dir
from rerankd.images import ImagePolicy

CommaList = Annotated[list[str], NoDecode]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rerankd"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    )
    return Path(home) / "hub"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANKD_", extra="forbid", frozen=True)

    # Models and how they run
    model: CommaList = Field(
        default_factory=lambda: ["builtin"],
        description="Model to serve: a hub id, a local directory or 'builtin'; SPEC=NAME sets the served name. Repeat for several.",
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="auto (on a CPU, the faster of torch and ONNX Runtime for the model, measured once and recorded; torch on GPUs), torch, or onnx.",
    )
    dtype: str = Field(
        "float32", description="float32; float16/bfloat16 on CUDA; int8 with --backend onnx."
    )
    force_int8: bool = Field(
        False,
        description="Serve int8 even when the export's accuracy probe against fp32 refuses it.",
    )
    device: str = Field(
        "cpu", description="cpu, cuda, cuda:N, or a list cuda:0,cuda:1 for one replica per device."
    )
    replicas: int = Field(
        1, ge=1, description="Model replicas per device, each with its own inference thread."
    )
    threads: int | None = Field(
        None, ge=1, description="Inference threads per replica (default: all cores)."
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="Longest (query, document) sequence in tokens (default: the model family's; 512 for cross-encoders), up to the model's own limit.",
    )
    family: str | None = Field(
        None,
        description="Model family, when detection cannot tell (e.g. qwen3-reranker, bge-reranker-gemma); `rerankd families` lists them.",
    )
    instruction: str | None = Field(
        None,
        description="Default instruction for models whose family takes one (requests may send their own).",
    )
    family_options: str | None = Field(
        None,
        description="Defaults for the family's request fields, as a JSON object, e.g. '{\"cutoff_layers\": 28}' for a layerwise bge reranker (requests may send their own).",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Where ONNX exports are cached."
    )
    calibration: CommaList = Field(
        default_factory=list,
        description="calibration.json files (rerankd calibrate); each attaches to the served model whose weights it was made for. Repeat for several.",
    )

    # Model registry
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where persisted model registrations are kept (registrations.json).",
    )
    registrations_file: Path | None = Field(
        None, description="Read-only registrations (a JSON list), e.g. a mounted ConfigMap."
    )
    cpu_cores: int | None = Field(
        None, ge=1, description="CPU cores that models launched side by side share (default: all)."
    )
    model_roots: CommaList = Field(
        default_factory=list,
        description="Directories under which registrations' model_uri may point (default: the data directory and the Hugging Face cache).",
    )
    open_registry: bool = Field(
        False,
        description="Let callers without an admin credential change the registry on a server that listens beyond loopback.",
    )
    model_load_timeout: float = Field(
        600.0, gt=0, description="Seconds a runtime model launch may take to load before it fails."
    )

    # Server
    host: str = Field("127.0.0.1", description="Address to bind (0.0.0.0 in containers).")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level; debug also logs document text."
    )
    drain_seconds: float = Field(
        30.0, ge=0, description="After SIGTERM, how long in-flight requests may take to finish."
    )
    header_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a client has to send a request's headers (a connection that sends nothing is closed after it).",
    )
    body_timeout: float = Field(
        15.0, gt=0, description="Seconds a client has to send a request's whole body (408 after)."
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection stays open."
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Open connections (plus running requests) above which new requests get 503 (default: no limit).",
    )

    # Batching and backpressure
    max_batch_tokens: int | None = Field(
        None,
        ge=64,
        description=(
            "Padded tokens (longest x count) per batch (default on CPU: 512 for ONNX Runtime, "
            "1024 for torch, 2048 for torch bf16; 16384 on GPU)."
        ),
    )
    max_batch_size: int = Field(256, ge=1, description="Sequences per batch, at most.")
    batches_in_flight: int | None = Field(
        None,
        ge=1,
        le=4,
        description=(
            "Batches each replica runs at once (default 2 on a GPU: the next batch is collated "
            "and copied while one runs; 1 on a CPU, where one batch uses every core)."
        ),
    )
    max_queue_tokens: int = Field(
        2_000_000, ge=1, description="Tokens waiting per model before new requests get 429."
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, description="How long a busy worker waits for more work to join a batch."
    )
    max_batch_ms: float = Field(
        100.0,
        ge=0,
        description="While interactive requests are about, other batches are cut to run at most twice the last small request's predicted time and never longer than this, from the measured cost per token (0: no time bound).",
    )
    request_timeout: float = Field(
        60.0, gt=0, description="Seconds a request may wait for its scores."
    )

    # Request limits
    max_documents: int = Field(1000, ge=1, description="Documents per request.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Request body size in bytes (413 above)."
    )
    max_query_chars: int = Field(16_000, ge=1, description="Characters in a query.")
    max_document_chars: int = Field(200_000, ge=1, description="Characters in one document.")
    long_document_strategy: Literal["truncate", "chunk"] = Field(
        "truncate", description="Default for documents longer than the model allows."
    )
    max_chunks_per_doc: int = Field(
        16,
        ge=1,
        description="Chunks per document with the chunk strategy; a request may ask for fewer, never more.",
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks.")
    span_window: int = Field(
        1, ge=1, le=16, description="Sentences per window when a request asks for spans."
    )
    span_stride: int = Field(1, ge=1, le=16, description="Sentences between span windows.")
    span_max_tokens: int = Field(
        128, ge=8, description="A longer sentence is cut into pieces of this many tokens for spans."
    )
    max_spans: int = Field(
        3, ge=1, le=64, description="Spans per document, at most (a request may ask for fewer)."
    )

    # Images
    max_image_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Encoded bytes per image (413 above)."
    )
    max_image_pixels: int = Field(
        36_000_000,
        ge=1,
        le=150_000_000,  # Pillow refuses more than 2 x Image.MAX_IMAGE_PIXELS in any case
        description="Pixels (width x height) per image (413 above).",
    )
    image_url_hosts: CommaList = Field(
        default_factory=list,
        description="Hosts whose http(s) image URLs may be fetched ('*' for any); none: URLs are refused.",
    )
    image_url_allow_private: bool = Field(
        False, description="Let image URLs reach loopback, link-local and private addresses."
    )
    image_url_timeout: float = Field(
        5.0, gt=0, description="Seconds to fetch one image URL, all of it (a total deadline)."
    )
    image_url_concurrency: int = Field(
        4, ge=1, le=64, description="Image URLs one request fetches at once."
    )
    max_request_pixels: int = Field(
        150_000_000,
        ge=1,
        description="Pixels of all the images one request decodes, from their headers (413 above).",
    )
    max_decode_pixels: int = Field(
        300_000_000,
        ge=1,
        description="Image pixels the whole server decodes at once; a request that would pass it waits briefly, then gets 429.",
    )

    # Score cache
    cache_entries: int = Field(
        100_000, ge=0, description="In-memory score cache size in entries (0 turns it off)."
    )
    redis_url: str | None = Field(
        None, description="Redis URL for a shared score cache and rate limits."
    )
    redis_ttl: int = Field(86_400, ge=1, description="Seconds a score stays in Redis.")
    cache_scope: Literal["shared", "key"] = Field(
        "shared",
        description="Whose requests share cached scores and embeddings: 'shared' (everyone), or "
        "'key' (each API key, JWT subject or, without auth, client address: a tenant cannot tell "
        "from usage.cached or latency what another tenant sent).",
    )
    embedding_cache_mb: int = Field(
        256,
        ge=0,
        description="In-memory cache of bi-encoder document embeddings, in MiB (0 turns it off); shared through Redis too when --redis-url is set.",
    )
    token_vector_cache_mb: int = Field(
        512,
        ge=0,
        description="In-memory cache of late-interaction (ColBERT) document token vectors, in MiB (0 turns it off); shared through Redis (float16) too when --redis-url is set.",
    )

    # Security
    api_keys: CommaList = Field(
        default_factory=list, description="Accepted API keys (comma-separated in the environment)."
    )
    api_keys_file: Path | None = Field(None, description="File with one API key per line.")
    jwt_secret: str | None = Field(None, description="HS256 secret for JWT bearer tokens.")
    jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for RS256 JWT bearer tokens."
    )
    jwt_audience: str | None = Field(None, description="Required JWT audience.")
    jwt_issuer: str | None = Field(None, description="Required JWT issuer.")
    admin_keys: CommaList = Field(
        default_factory=list,
        description="Keys that may change the model registry (register, launch, terminate).",
    )
    jwt_admin_scope: str = Field(
        "rerankd:admin", description="JWT scope that may change the model registry."
    )
    server_secret: str | None = Field(
        None,
        description="Secret that keys the names of API keys in logs and /info (default: derived from the configured keys).",
    )
    auth_ops: bool = Field(
        False, description="Require credentials on /health, /metrics and /info too."
    )
    rate_limit: str | None = Field(
        None, description="Per key (or client address) rate limit, e.g. '100/second;2000/minute'."
    )
    rate_limit_on_failure: Literal["open", "closed"] = Field(
        "open",
        description="When the Redis that holds rate limits fails or stalls: 'open' serves, counted "
        "against the same limits in this process only, until Redis is back; 'closed' refuses "
        "with 503 and Retry-After.",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed by CORS (off when empty)."
    )

    @field_validator(
        "model",
        "api_keys",
        "admin_keys",
        "cors_origins",
        "image_url_hosts",
        "model_roots",
        "calibration",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(item, str) for item in items):
            return [part.strip() for item in items for part in item.split(",") if part.strip()]
        return value

    @field_validator("family_options")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(_json_object(value), dict):
            raise ValueError("family_options must be a JSON object")
        return value

    @property
    def family_defaults(self) -> dict[str, Any]:
        """`family_options` parsed (validated as a JSON object at start-up)."""
        parsed = _json_object(self.family_options) if self.family_options else {}
        return dict(parsed) if isinstance(parsed, dict) else {}

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        from rerankd.families import check_family_name

        return check_family_name(value)

    @model_validator(mode="after")
    def _check_engine(self) -> Settings:
        for device in self.devices:
            self.engine_options(device)  # raises ValueError on a bad combination
        if not self.model:
            raise ValueError("at least one --model is needed")
        if self.api_keys_file is not None:
            self.file_keys()  # an empty or unreadable keys file must not leave the server open
        return self

    def credential_keys(self) -> list[str]:
        """Every configured API and admin key (what derived secrets are made from)."""
        return [*self.api_keys, *self.file_keys(), *self.admin_keys]

    def file_keys(self) -> list[str]:
        """The keys in `--api-keys-file`; `ValueError` naming the file when it has none."""
        path = self.api_keys_file
        if path is None:
            return []
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"--api-keys-file {path} cannot be read ({reason})") from None
        keys = [
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
        if not keys:
            raise ValueError(
                f"--api-keys-file {path} holds no key (only blank lines or comments); "
                "the server would run without authentication"
            )
        return keys

    def allowed_model_roots(self) -> list[Path]:
        """Where registrations' `model_uri` may point, symlinks resolved."""
        roots = [Path(root) for root in self.model_roots] or [self.data_dir, hf_cache_dir()]
        return [root.expanduser().resolve() for root in roots]

    @property
    def devices(self) -> list[str]:
        return [d.strip() for d in self.device.split(",") if d.strip()] or ["cpu"]

    @property
    def batch_tokens(self) -> int:
        """The batch budget asked for, else the first device's default for torch fp32 (a GPU's
        16384; on a CPU each loaded model batches at its own backend's size: `Engine`)."""
        return self.max_batch_tokens or default_batch_tokens(self.devices[0])

    @property
    def auth_enabled(self) -> bool:
        return bool(
            self.api_keys or self.api_keys_file or self.jwt_secret or self.jwt_public_key_file
        )

    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            url_hosts=frozenset(host.lower() for host in self.image_url_hosts),
            allow_private=self.image_url_allow_private,
            timeout=self.image_url_timeout,
            max_request_pixels=self.max_request_pixels,
            max_decode_pixels=self.max_decode_pixels,
            url_concurrency=self.image_url_concurrency,
        )

    @property
    def admin_enabled(self) -> bool:
        """Whether any credential can change the registry (admin keys, or JWTs with the scope)."""
        return bool(self.admin_keys or self.jwt_secret or self.jwt_public_key_file)

    def engine_options(self, device: str) -> EngineOptions:
        threads = self.threads
        if threads is None and device == "cpu" and self.replicas > 1:
            # CPU replicas share the cores; oversubscribing them only adds contention.
            threads = max(1, len(os.sched_getaffinity(0)) // self.replicas)
        return EngineOptions(
            backend=self.backend,
            dtype=self.dtype,  # type: ignore[arg-type]
            device=device,
            threads=threads,
            max_length=self.max_length,
            cache_dir=self.cache_dir,
            force_int8=self.force_int8,
        )


def _json_object(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"family_options is not JSON: {exc.msg}") from None
