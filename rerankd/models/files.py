"""What a local model directory may hold, and where it may be: checked before any file opens.

A registration names a directory; the loader then opens what is inside. A FIFO named
`model.bin` would block the one loader thread forever, a device file would be read without
end, and a symlink may lead anywhere. So every entry must be a directory or a regular file
(after symlinks), and, for directories named at runtime, lie under the configured roots.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from rerankd.errors import InvalidInput

MAX_ENTRIES = 10_000  # a model directory with more entries than this is not a model


def under_roots(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path` (resolved: symlinks followed, `..` gone) lies in one of `roots`."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def check_model_uri(uri: str, roots: Sequence[Path]) -> None:
    """A registration's `model_uri` must be a directory under a root; `InvalidInput` if not.

    Outside the roots the message is the same whether or not the path exists, so the
    registry cannot be used to probe the server's file system.
    """
    path = Path(uri.removeprefix("file://")).expanduser()
    allowed = ", ".join(str(root) for root in roots) or "(none)"
    if not path.is_absolute() or not under_roots(path, roots):
        raise InvalidInput(
            f"model_uri must be an absolute path to a directory under the model roots "
            f"({allowed}; --model-roots)"
        )
    real = Path(os.path.realpath(path))
    if not real.is_dir():
        raise InvalidInput(f"model_uri {uri!r} is not a directory under the model roots")
    check_regular_files(real, roots)


def check_regular_files(directory: Path, roots: Sequence[Path] | None = None) -> None:
    """Every entry below `directory` a directory or a regular file (and under `roots`)."""
    seen = 0
    for parent, dirs, files in os.walk(directory, followlinks=False):
        for name in [*dirs, *files]:
            seen += 1
            if seen > MAX_ENTRIES:
                raise InvalidInput(f"{directory} holds more than {MAX_ENTRIES:,} entries")
            entry = Path(parent) / name
            try:
                mode = entry.stat().st_mode  # follows symlinks
            except OSError:
                raise InvalidInput(
                    f"{entry.relative_to(directory)} in the model directory cannot be read "
                    "(a broken symlink?)"
                ) from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise InvalidInput(
                    f"{entry.relative_to(directory)} in the model directory is not a regular "
                    "file (a FIFO, socket or device is never opened)"
                )
            if roots is not None and entry.is_symlink() and not under_roots(entry, roots):
                raise InvalidInput(
                    f"{entry.relative_to(directory)} in the model directory links outside "
                    "the model roots"
                )
