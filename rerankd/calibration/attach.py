"""Which calibration a launched model serves: its registration's file, a server-wide
`--calibration` file made for its weights, or `calibration.json` beside its weights.

A file that is named for a model and made for other weights fails the load with a message
that names the file; so does a malformed one. Serving stays numpy-only (no scikit-learn).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rerankd.calibration.model import (
    FILENAME,
    Calibration,
    CalibrationError,
    ModelIdentity,
    check_for,
    load_calibration,
)
from rerankd.models import ResolvedModel


def identity_of(model: ResolvedModel) -> ModelIdentity:
    return ModelIdentity(model.name, model.revision, model.family, model.settings_hash)


def load_all(paths: Sequence[str]) -> list[Calibration]:
    """The server-wide files, each read and checked once at start-up."""
    return [load_calibration(Path(p).expanduser()) for p in paths]


def find(
    model: ResolvedModel, named: str | None, server_wide: Sequence[Calibration]
) -> Calibration | None:
    """The calibration `model` serves, or None; a named or found file that does not fit is
    refused (`CalibrationError`)."""
    identity = identity_of(model)
    if named:
        return check_for(load_calibration(Path(named).expanduser()), identity)
    for calibration in server_wide:
        if calibration.model.fits(identity):
            return calibration
    beside = model.path / FILENAME
    if beside.is_file():
        return check_for(load_calibration(beside), identity)
    return None


def unmatched(server_wide: Sequence[Calibration], served: Sequence[ModelIdentity]) -> None:
    """A `--calibration` file that no start-up model's weights match is an error, not ignored."""
    for calibration in server_wide:
        if not any(calibration.model.fits(m) for m in served):
            names = ", ".join(f"{m.name} (revision {m.revision})" for m in served) or "none"
            mine = calibration.model
            raise CalibrationError(
                f"calibration {calibration.source} was made for {mine.name} (revision "
                f"{mine.revision}, settings {mine.settings}, {mine.family}), and no served model "
                f"has those weights and settings "
                f"(served: {names})"
            )
