"""Known vulnerabilities in the installed dependency set fail the build.

`make audit` (and CI) run this with the project's venv. Two sources of advisories:

1. pip-audit against its online vulnerability service, whenever that service answers. Where it
   does not (this workplace reaches package indexes only, which serve no vulnerability data),
   pip-audit marks every dependency "not found"; that is reported, never taken as "clean".
2. `.ci/advisories.json`, a snapshot of the PyPA advisory database (OSV records) cut down to
   the packages rerankd's environments install: checked offline, always. `--refresh DIR`
   rebuilds it from a checkout of that database.

A finding fails unless `.ci/audit-allow.toml` lists its id with a reason.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "advisories.json"
ALLOW = HERE / "audit-allow.toml"


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    source: str


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every distribution in this interpreter's environment, by canonical name."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonical(name)] = dist.version
    return found


def _affected(version: Version, entry: dict[str, Any]) -> bool:
    if str(version) in entry.get("versions", ()):
        return True
    for events in entry.get("ranges", ()):
        introduced: Version | None = None
        for event in events:
            kind, value = next(iter(event.items()))
            if kind == "introduced":
                introduced = Version("0") if value == "0" else _version(value)
            elif introduced is not None and kind in ("fixed", "last_affected"):
                bound = _version(value)
                if bound is not None and (
                    introduced <= version < bound
                    if kind == "fixed"
                    else introduced <= version <= bound
                ):
                    return True
                introduced = None
        if introduced is not None and version >= introduced:
            return True  # introduced and never fixed
    return False


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def snapshot_findings(packages: dict[str, str]) -> list[Finding]:
    data = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    findings = []
    for name, version_text in packages.items():
        version = _version(version_text.split("+")[0])
        if version is None:
            continue
        for advisory in data["packages"].get(name, ()):
            if _affected(version, advisory):
                findings.append(
                    Finding(
                        name, version_text, advisory["id"], tuple(advisory["aliases"]), "snapshot"
                    )
                )
    return findings


def pip_audit_findings() -> tuple[list[Finding], str]:
    """pip-audit's findings, and one line saying how much it could audit."""
    command = [sys.executable, "-m", "pip_audit", "--skip-editable", "--format", "json"]
    command += ["--progress-spinner", "off"]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
        report = json.loads(run.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        return [], f"pip-audit did not run ({type(exc).__name__}); the snapshot alone decides"
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    findings = [
        Finding(canonical(d["name"]), d["version"], v["id"], tuple(v.get("aliases", ())), "online")
        for d in audited
        for v in d.get("vulns", ())
    ]
    if not audited:
        return findings, (
            f"pip-audit: its vulnerability service answered for none of {len(dependencies)} "
            "dependencies (unreachable from here); the snapshot alone decides"
        )
    return findings, f"pip-audit: audited {len(audited)} of {len(dependencies)} dependencies online"


def allowed() -> dict[str, str]:
    table = tomllib.loads(ALLOW.read_text(encoding="utf-8")).get("ignore", {})
    empty = [key for key, reason in table.items() if not str(reason).strip()]
    if empty:
        raise SystemExit(f"{ALLOW.name}: every ignored finding needs a reason: {empty}")
    return {str(k): str(v) for k, v in table.items()}


def refresh(database: Path) -> None:
    """Rebuild the snapshot from a checkout of the PyPA advisory database (needs PyYAML)."""
    import yaml

    wanted = set(installed())
    if SNAPSHOT.exists():  # keep packages other environments (CUDA, bench) install
        wanted |= set(json.loads(SNAPSHOT.read_text(encoding="utf-8"))["packages"])
    packages: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted((database / "vulns").iterdir()):
        name = canonical(folder.name)
        if name not in wanted:
            continue
        for file in sorted(folder.glob("*.yaml")):
            record = yaml.safe_load(file.read_text(encoding="utf-8"))
            if record.get("withdrawn"):
                continue
            for affected in record.get("affected", ()):
                if canonical(affected["package"]["name"]) != name:
                    continue
                packages.setdefault(name, []).append(
                    {
                        "id": record["id"],
                        "aliases": sorted(record.get("aliases") or []),
                        "versions": sorted(str(v) for v in affected.get("versions") or []),
                        "ranges": [
                            [{k: str(v) for k, v in e.items()} for e in r["events"]]
                            for r in affected.get("ranges") or []
                            if r.get("type") == "ECOSYSTEM"
                        ],
                    }
                )
    commit = subprocess.run(
        ["git", "-C", str(database), "log", "-1", "--format=%H %cs"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    SNAPSHOT.write_text(
        json.dumps({"source": f"pypa/advisory-database {commit}", "packages": packages}, indent=0)
        + "\n",
        encoding="utf-8",
    )
    print(
        f"wrote {SNAPSHOT}: {sum(map(len, packages.values()))} advisories, {len(packages)} packages"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", type=Path, help="rebuild the snapshot from this checkout")
    parser.add_argument("--offline", action="store_true", help="skip pip-audit's online service")
    args = parser.parse_args()
    if args.refresh:
        refresh(args.refresh)
        return 0
    packages = installed()
    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))["source"]
    findings = snapshot_findings(packages)
    print(f"snapshot ({snapshot}): checked {len(packages)} installed distributions")
    if not args.offline:
        online, summary = pip_audit_findings()
        findings += online
        print(summary)
    ignore = allowed()
    failing = []
    for finding in sorted(set(findings), key=lambda f: (f.package, f.id)):
        ids = {finding.id, *finding.aliases}
        reason = next((ignore[i] for i in ids if i in ignore), None)
        line = f"{finding.package} {finding.version}: {finding.id} ({finding.source})"
        if reason is None:
            failing.append(line)
        else:
            print(f"allowed  {line}: {reason}")
    for line in failing:
        print(f"FAILING  {line}")
    print(f"{len(failing)} unlisted findings")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
