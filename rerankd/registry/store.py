"""Registrations in files: the data directory's old file, and an operator's file (a ConfigMap).

The data directory's `registrations.json` is where persisted registrations lived before the
shared store (desired.py); at start its entries move into the store and the file is renamed
`registrations.json.imported-<time>`. An entry that does not validate is reported and skipped
(the rest are imported); a file that cannot be parsed at all is reported and moved aside as
`registrations.json.corrupt-<time>`. `save` still writes the file atomically (a temporary file
in the same directory, flushed and fsynced, then renamed over the old one).

The operator's file (`--registrations-file`) is read-only to rerankd: a JSON list of
registrations, one registration, or `{"registrations": [...]}`. An entry that does not
validate is reported and skipped; the rest load.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rerankd.registry.spec import Registration
from rerankd.validation import describe_validation_error

logger = logging.getLogger(__name__)

FILE_NAME = "registrations.json"
_FORMAT_VERSION = 1


class RegistrationStore:
    """The persisted registrations under `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.problems: list[str] = []  # what went wrong reading files at start, for /info

    def load(self) -> list[Registration]:
        if not self.path.exists():
            return []
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(document, dict) or not isinstance(
                document.get("registrations"), list
            ):
                raise ValueError('expected {"registrations": [...]}')
            items = document["registrations"]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._set_aside(exc)
            return []
        found = []
        for index, item in enumerate(items):
            try:
                found.append(Registration.model_validate(item))
            except ValidationError as exc:
                _report(self.problems, f"{self.path}: entry {index} skipped: {_reason(exc)}")
        return found

    def retire(self, imported: int) -> None:
        """Rename the file once its entries are in the shared store (kept, never deleted)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{FILE_NAME}.imported-{stamp}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            _report(self.problems, f"{self.path} could not be renamed ({exc.strerror})")
            return
        logger.info("%d registration(s) from %s moved into the shared store", imported, target)

    def save(self, registrations: list[Registration]) -> None:
        """Write every persisted registration at once, atomically."""
        document = {
            "version": _FORMAT_VERSION,
            "registrations": [r.public() for r in registrations],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".registrations-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    def _set_aside(self, error: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{FILE_NAME}.corrupt-{stamp}")
        count = 1
        while aside.exists():  # never overwrite an earlier one
            count += 1
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{stamp}-{count}")
        reason = _reason(error)
        try:
            os.replace(self.path, aside)
            moved = f"moved aside to {aside}"
        except OSError as exc:
            moved = f"could not be moved aside ({exc.strerror})"
        message = f"the registrations file {self.path} is unreadable ({reason}); {moved}"
        self.problems.append(message)
        logger.error(message, extra={"path": str(self.path), "moved_to": str(aside)})


def read_registrations_file(path: Path, problems: list[str]) -> list[Registration]:
    """An operator's registrations file; bad entries are reported in `problems` and skipped."""
    try:
        document: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _report(problems, f"the registrations file {path} is unreadable ({_reason(exc)})")
        return []
    if isinstance(document, dict):
        document = document.get("registrations", [document])
    if not isinstance(document, list):
        _report(problems, f"the registrations file {path} must hold a list of registrations")
        return []
    found = []
    for index, item in enumerate(document):
        try:
            found.append(Registration.model_validate(item))
        except ValidationError as exc:
            _report(
                problems,
                f"{path}: entry {index} skipped: {describe_validation_error(exc.errors())}",
            )
    return found


def _report(problems: list[str], message: str) -> None:
    problems.append(message)
    logger.error(message)


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return describe_validation_error(error.errors())
    return f"{type(error).__name__}: {error}"


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
