"""What `rerankd eval` compares: a model in one mode, in process or behind a server.

A scorer turns (query, candidates) into one score per candidate, in the candidates' order.
`Mode` is how a model runs (`torch`, `onnx`, `onnx:int8`, `torch:float16` on CUDA); a model
given as a URL (`http://host:8000`, or `http://host:8000#name` for one of several served
models) is scored by that server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class Scorer(Protocol):
    label: str

    def score(self, query: str, documents: list[str]) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Mode:
    backend: str = "torch"
    dtype: str = "float32"

    @classmethod
    def parse(cls, text: str) -> Mode:
        backend, _, dtype = text.strip().partition(":")
        return cls(backend or "torch", dtype or ("int8" if backend == "int8" else "float32"))

    def __str__(self) -> str:
        return self.backend if self.dtype == "float32" else f"{self.backend} {self.dtype}"


@dataclass(frozen=True)
class ModelRun:
    """One row of the report: a model and the mode it runs in (`None` for a server)."""

    model: str
    mode: Mode | None

    @property
    def is_remote(self) -> bool:
        return is_url(self.model)

    @property
    def label(self) -> str:
        if self.mode is None:
            return self.model
        name = Path(self.model).name if Path(self.model).is_dir() else self.model
        return f"{name} ({self.mode})"


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def plan_runs(models: list[str], modes: list[Mode]) -> list[ModelRun]:
    """Every local model in every mode; a server once."""
    runs: list[ModelRun] = []
    for model in models:
        if is_url(model):
            runs.append(ModelRun(model, None))
        else:
            runs.extend(ModelRun(model, mode) for mode in modes)
    return runs


class LocalScorer:
    """The in-process `Reranker`: the engine `rerankd serve` runs, without HTTP."""

    def __init__(
        self,
        run: ModelRun,
        device: str = "cpu",
        max_length: int = 512,
        threads: int | None = None,
    ) -> None:
        from rerankd.reranker import Reranker

        assert run.mode is not None
        self.label = run.label
        self._reranker = Reranker(
            run.model,
            backend=run.mode.backend,
            dtype=run.mode.dtype,
            device=device,
            max_length=max_length,
            threads=threads,
        )

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        return self._reranker.score([(query, d) for d in documents])

    def close(self) -> None:
        pass


class RemoteScorer:
    """A running server, through the client."""

    def __init__(self, run: ModelRun, api_key: str | None = None, timeout: float = 120.0) -> None:
        from rerankd.client import Client

        url, _, served = run.model.partition("#")
        self.label = run.label
        self._model = served or None
        self._client = Client(url.rstrip("/"), api_key=api_key, timeout=timeout)

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        ranking = self._client.rerank(query, documents, model=self._model)
        scores = np.full(len(documents), np.nan)
        for result in ranking.results:
            scores[result.index] = result.score
        if np.isnan(scores).any():
            raise RuntimeError(f"{self.label} did not score every document")
        return scores

    def close(self) -> None:
        self._client.close()
