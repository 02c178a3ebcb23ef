"""What a loaded model's cached scores and vectors are keyed by: everything that changes them.

Processes that share a Redis cache may serve the same weights differently (an int8 pod next to
an fp32 pod, a longer `max_length`, a GPU in fp16, another config.json or tokenizer): a score
one of them cached must never be served by another that would have computed a different one.
The request's own inputs (instruction, truncation and chunking policy) are added by the
scoring path.
"""

from __future__ import annotations

from pathlib import Path

from rerankd.engine.engine import Engine

# Bump when the meaning of an identity changes, so entries cached under the old one are unused.
IDENTITY_VERSION = 3  # 3: the settings files' hash


def cache_identity(engine: Engine) -> tuple[object, ...]:
    """(version, name, weights revision or hash, settings files' hash, family, max_length,
    backend, device kind, dtype served, int8 scheme). The settings hash covers config.json,
    module configs and tokenizer files (`ResolvedModel.settings_hash`): the same weights under
    another pooling, temperature or vocabulary score differently. The dtype is the one
    actually served (an int8 request the accuracy probe refused serves fp32), and the int8
    scheme is the CPU class its file was tuned for."""
    model, options = engine.model, engine.options
    dtype: str = engine.served_dtype
    scheme: str | None = None
    if dtype == "int8":
        served = getattr(engine.backend, "file", None)
        scheme = (served.stem.partition("-")[2] if isinstance(served, Path) else "") or "generic"
    return (
        IDENTITY_VERSION,
        model.name,
        model.revision,
        model.settings_hash,
        model.family,
        engine.max_length,
        options.backend,
        options.device.partition(":")[0],
        dtype,
        scheme,
    )
