"""Calibrated scores: `rerankd calibrate` fits raw score -> P(relevant); the server applies it."""

from rerankd.calibration.model import (
    FILENAME,
    Calibration,
    CalibrationError,
    ModelIdentity,
    check_for,
    load_calibration,
)

__all__ = [
    "FILENAME",
    "Calibration",
    "CalibrationError",
    "ModelIdentity",
    "check_for",
    "load_calibration",
]
