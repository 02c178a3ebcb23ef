"""Why a model could not be found, in plain words: what was tried, and the next step.

A newcomer's first error is usually one of four: a path that does not exist (a fine-tuned
model not written yet), a name that is neither a path nor a hub id, a hub that cannot be
reached (the id may be right) and a model the hub does not have (the id is wrong). Each gets
its own message; none is a library's traceback or a validation pattern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rerankd.errors import ModelNotFound
from rerankd.models.spec import BUILTIN_NAMES, ModelSpec

HubFailure = Literal["missing", "gated", "revision", "unreachable", "other"]
BUILTIN_HINT = "or try rerankd with `--model builtin` (no download)"


def looks_like_path(source: str) -> bool:
    """A name the user meant as a directory: hub ids are `NAME` or `ORG/NAME`, never these."""
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source in {".", ".."}
        or "\\" in source
        or source.count("/") > 1
        or Path(source).expanduser().exists()
    )


def download_id(spec: ModelSpec) -> str | None:
    """The hub id to suggest downloading: a registration's `model_id`, else the source."""
    if spec.hub_id:
        return spec.hub_id
    return None if looks_like_path(spec.source) or not is_hub_id(spec.source) else spec.source


def is_hub_id(source: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils._validators import validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def check_source(spec: ModelSpec) -> None:
    """Raise `ModelNotFound` for a spec that can name nothing: a missing path, a malformed id."""
    source = spec.source
    if source in BUILTIN_NAMES:
        return
    path = Path(source).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ModelNotFound(
            f"{source!r} is a file, not a model directory. Next step: pass the directory that "
            "holds config.json and the weights (*.safetensors), " + BUILTIN_HINT + "."
        )
    if looks_like_path(source):
        raise ModelNotFound(
            f"no directory {source!r} (looked for {path.absolute()}); a path is never looked "
            f"up on the Hugging Face hub. Next step: check the path; {_path_steps(spec)}"
        )
    if not is_hub_id(source):
        raise ModelNotFound(
            f"{source!r} is neither a local directory nor a Hugging Face model id (ORG/NAME "
            "of letters, digits, '-', '_' and '.', such as BAAI/bge-reranker-v2-m3), so "
            "nothing was looked up. Next step: fix the name, pass a local directory, "
            + BUILTIN_HINT
            + "."
        )


def _path_steps(spec: ModelSpec) -> str:
    hub = download_id(spec)
    fetch = f"`hf download {hub} --local-dir {spec.source}` fetches model_id {hub!r} there"
    steps = [
        f"a fine-tuned model is there once `rerankd finetune ... --output {spec.source}` has "
        "finished",
        *([fetch] if hub else []),
        BUILTIN_HINT,
    ]
    return "; ".join(steps) + "."


def hub_failure(exc: BaseException) -> HubFailure:
    """What a failed hub download means, read from the exception and its causes."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GatedRepoError):
            return "gated"
        if isinstance(seen, RepositoryNotFoundError):
            return "missing"
        if isinstance(seen, RevisionNotFoundError):
            return "revision"
        # huggingface_hub's HTTP library is its own (httpx2): its errors are known by name.
        names = {kind.__name__ for kind in type(seen).__mro__}
        if isinstance(seen, (ConnectionError, TimeoutError)) or "TransportError" in names:
            return "unreachable"
        if isinstance(seen, HfHubHTTPError) and seen.response.status_code >= 500:
            return "unreachable"
        seen = seen.__cause__ or seen.__context__
    return "other"


def not_found(spec: ModelSpec, tried: list[str], failure: HubFailure | None) -> ModelNotFound:
    """The error for a hub id that is neither cached nor downloaded, by what went wrong."""
    source, hub = spec.source, download_id(spec) or spec.source
    fetch = f"`hf download {hub}`"
    revision = f" at revision {spec.revision!r}" if spec.revision else ""
    what = {
        None: f"model {source!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, "
        "so it was not downloaded",
        "missing": f"the Hugging Face hub has no model {source!r} (or it is private): check "
        "the id's spelling on the hub",
        "gated": f"model {source!r} is gated on the Hugging Face hub: accept its licence on "
        "the hub and log in with `hf auth login` (or set HF_TOKEN)",
        "revision": f"model {source!r} has no revision {spec.revision!r} on the hub",
        "unreachable": "the Hugging Face hub could not be reached (no network, a proxy, or "
        f"HF_ENDPOINT), so {source!r} was not checked: the id may well be right",
        "other": f"model {source!r} could not be downloaded from the Hugging Face hub",
    }[failure]
    return ModelNotFound(
        f"{what}. Tried: {'; '.join(tried)}. Next step: {fetch}{revision} where the hub is "
        "reachable (then copy or mount its HF_HOME here), pass a local directory with "
        "config.json and the weights, " + BUILTIN_HINT + "."
    )
