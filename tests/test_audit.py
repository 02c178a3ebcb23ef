"""The dependency audit (.ci/audit.py) finds what its advisory snapshot says is vulnerable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_audit"] = module
    spec.loader.exec_module(module)
    return module


def test_an_old_release_is_flagged_and_a_fixed_one_is_not(audit: ModuleType) -> None:
    # urllib3 1.17 and 1.18 are in the snapshot (PYSEC-2017-98, fixed in 1.18.1).
    old = audit.snapshot_findings({"urllib3": "1.18"})
    assert "PYSEC-2017-98" in {f.id for f in old}
    assert "CVE-2016-9015" in {a for f in old for a in f.aliases}
    fixed = audit.snapshot_findings({"urllib3": "1.18.1"})
    assert "PYSEC-2017-98" not in {f.id for f in fixed}


def test_open_ended_and_last_affected_ranges(audit: ModuleType) -> None:
    from packaging.version import Version

    never_fixed = {"ranges": [[{"introduced": "0"}]]}
    assert audit._affected(Version("99.0"), never_fixed)
    last = {"ranges": [[{"introduced": "1.0"}, {"last_affected": "1.2"}]]}
    assert audit._affected(Version("1.2"), last) and not audit._affected(Version("1.2.1"), last)
    assert not audit._affected(Version("0.9"), last)


def test_the_installed_environment_has_no_unlisted_finding(audit: ModuleType) -> None:
    allowed = audit.allowed()
    findings = audit.snapshot_findings(audit.installed())
    unlisted = [f for f in findings if not ({f.id, *f.aliases} & set(allowed))]
    assert unlisted == []


def test_an_allowlist_entry_needs_a_reason(
    audit: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow = tmp_path / "allow.toml"
    allow.write_text('[ignore]\n"PYSEC-2017-98" = " "\n')
    monkeypatch.setattr(audit, "ALLOW", allow)
    with pytest.raises(SystemExit, match="needs a reason"):
        audit.allowed()
