"""A fitted calibration as the server reads it: raw score -> P(relevant), numpy only.

`calibration.json` is small and versioned. Serving needs no scikit-learn: Platt scaling is
`sigmoid(a * raw + b)` and isotonic regression is `np.interp` over its thresholds. The file
names the weights it was fitted on (revision and family), and the server refuses it for any
other weights: a calibration is a fact about one model's score scale, wrong on the next.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from rerankd.errors import InvalidInput

FORMAT = "rerankd-calibration"
VERSION = 2  # 2: the model's settings hash joined its identity
IDENTITY_FIELDS = ("name", "revision", "family", "settings")
FILENAME = "calibration.json"  # found beside a model's weights when none is named

Method = Literal["platt", "isotonic"]
METHODS: tuple[Method, ...] = ("platt", "isotonic")


class CalibrationError(InvalidInput):
    """A calibration file that cannot be served; `str()` names the file."""


@dataclass(frozen=True)
class ModelIdentity:
    """The weights a calibration belongs to: what changes the raw score scale."""

    name: str
    revision: str
    family: str
    settings: str  # config and tokenizer files: pooling or a temperature move the scale too

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "revision": self.revision,
            "family": self.family,
            "settings": self.settings,
        }

    def fits(self, other: ModelIdentity) -> bool:
        """The same raw score scale: same weights, settings files and family (any name)."""
        return (self.revision, self.settings, self.family) == (
            other.revision,
            other.settings,
            other.family,
        )


@dataclass(frozen=True)
class Calibration:
    """A monotone non-decreasing map from a model's raw score to a probability."""

    method: Method
    parameters: dict[str, Any]
    model: ModelIdentity
    data: dict[str, Any] = field(default_factory=dict)  # hash, pairs, queries, positives
    fitted_at: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it was read from ("" when built in memory)

    def __post_init__(self) -> None:
        _check_parameters(self.method, self.parameters)

    @property
    def label(self) -> str:
        """How /info and the models API name it."""
        digest = str(self.data.get("hash", ""))[:19]
        return f"{self.method} ({digest})" if digest else self.method

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities in [0, 1], one per raw score (float64)."""
        x = np.asarray(raw, dtype=np.float64)
        if self.method == "platt":
            a, b = float(self.parameters["a"]), float(self.parameters["b"])
            z = a * x + b
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, without overflow warnings
        xs = np.asarray(self.parameters["x"], dtype=np.float64)
        ys = np.asarray(self.parameters["y"], dtype=np.float64)
        return np.interp(x, xs, ys)

    def describe(self) -> dict[str, object]:
        """What the server says about the calibration it serves."""
        info: dict[str, object] = {
            "method": self.method,
            "data_hash": self.data.get("hash"),
            "fitted_at": self.fitted_at,
            "revision": self.model.revision,
        }
        if self.source:
            info["file"] = self.source
        held = self.metrics.get("after")
        if isinstance(held, dict):
            info["held_out"] = held
        return info

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "parameters": self.parameters,
            "model": self.model.as_dict(),
            "score": "raw",  # the map's input: the model's raw score (raw_scores=true)
            "data": self.data,
            "fitted_at": self.fitted_at,
            "metrics": self.metrics,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def load_calibration(path: Path | str) -> Calibration:
    """Read and check a calibration file; any problem is a `CalibrationError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"calibration {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"calibration {path}: not a readable JSON file ({exc})") from None
    try:
        return _parse(data, str(path))
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else str(exc)
        raise CalibrationError(f"calibration {path}: {message}") from None


def check_for(calibration: Calibration, model: ModelIdentity) -> Calibration:
    """The calibration, if it was fitted on these weights; otherwise a `CalibrationError`."""
    mine = calibration.model
    if not mine.fits(model):
        raise CalibrationError(
            f"calibration {calibration.source or '(in memory)'} was made for {mine.name} "
            f"(revision {mine.revision}, settings {mine.settings}, {mine.family}), not for "
            f"{model.name} (revision {model.revision}, settings {model.settings}, "
            f"{model.family}); fit one for this model with rerankd calibrate"
        )
    return calibration


def _parse(data: object, source: str) -> Calibration:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"'format' must be {FORMAT!r}")
    if data.get("version") != VERSION:
        raise ValueError(f"version {data.get('version')!r} is not supported (this reads {VERSION})")
    method = data.get("method")
    if method not in METHODS:
        raise ValueError(f"'method' must be one of {', '.join(METHODS)}")
    model = data.get("model")
    if not isinstance(model, dict) or not all(
        isinstance(model.get(k), str) and model.get(k) for k in IDENTITY_FIELDS
    ):
        raise ValueError("'model' must name the model: " + ", ".join(IDENTITY_FIELDS))
    parameters = data.get("parameters")
    if not isinstance(parameters, dict):
        raise ValueError("'parameters' must be an object")
    extras = {k: data.get(k, {}) for k in ("data", "metrics")}
    if not all(isinstance(v, dict) for v in extras.values()):
        raise ValueError("'data' and 'metrics' must be objects")
    return Calibration(
        method=cast(Method, method),
        parameters=parameters,
        model=ModelIdentity(*(model[k] for k in IDENTITY_FIELDS)),
        data=extras["data"],
        fitted_at=str(data.get("fitted_at", "")),
        metrics=extras["metrics"],
        source=source,
    )


def _check_parameters(method: Method, parameters: dict[str, Any]) -> None:
    """Only maps that are finite and monotone non-decreasing: a calibration never reorders."""
    if method == "platt":
        a, b = parameters.get("a"), parameters.get("b")
        if not all(_finite(v) for v in (a, b)):
            raise ValueError("Platt parameters 'a' and 'b' must be finite numbers")
        if cast(float, a) < 0:
            raise ValueError("Platt slope 'a' is negative: the map would reverse the ranking")
        return
    xs, ys = parameters.get("x"), parameters.get("y")
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
        raise ValueError("isotonic parameters 'x' and 'y' must be equally long, non-empty lists")
    if not all(_finite(v) for v in (*xs, *ys)):
        raise ValueError("isotonic thresholds must be finite numbers")
    if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
        raise ValueError("isotonic 'x' must be strictly increasing")
    if any(b < a for a, b in zip(ys, ys[1:], strict=False)) or not 0 <= ys[0] <= ys[-1] <= 1:
        raise ValueError("isotonic 'y' must be non-decreasing probabilities in [0, 1]")


def _finite(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
