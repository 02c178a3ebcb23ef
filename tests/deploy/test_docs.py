"""docs/deploy.md stays true to the code: settings it names exist, defaults it quotes hold."""

from __future__ import annotations

import re

from tests.deploy.conftest import REPO, settings_from_env

DOC = REPO / "docs" / "deploy.md"
# Variables the compose file interpolates itself; they are not rerankd settings.
COMPOSE_VARIABLES = {"RERANKD_PUBLISH"}


def test_every_setting_named_exists() -> None:
    from rerankd.config import Settings

    text = DOC.read_text()
    named = set(re.findall(r"\bRERANKD_[A-Z_]*[A-Z]\b", text)) - COMPOSE_VARIABLES
    known = {"RERANKD_" + name.upper() for name in Settings.model_fields}
    assert named and not named - known, sorted(named - known)
    flags = {f.removeprefix("--") for f in re.findall(r"`(--[a-z-]+)", text)}
    serve_flags = {"--" + name.replace("_", "-") for name in Settings.model_fields}
    for flag in ("port", "max-body-bytes", "max-documents", "request-timeout", "drain-seconds"):
        assert flag in flags and "--" + flag in serve_flags


def test_the_quoted_defaults_hold() -> None:
    text = DOC.read_text()
    defaults = settings_from_env({})
    row = {
        "port": str(defaults.port),
        "max-body-bytes": str(defaults.max_body_bytes),
        "max-documents": str(defaults.max_documents),
        "request-timeout": f"{defaults.request_timeout:g} s",
        "drain-seconds": f"{defaults.drain_seconds:g} s",
    }
    for flag, value in row.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| `--{flag}` |"))
        assert value in line, (flag, value, line)


def test_the_files_it_links_exist() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", DOC.read_text()):
        assert (DOC.parent / target).exists(), target
