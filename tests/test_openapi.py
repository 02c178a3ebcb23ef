"""Property-based fuzzing of every route from the server's own OpenAPI schema (schemathesis).

Checks: no 5xx, every response matches its documented schema, status code, content type and
headers. Schema-valid requests may still be refused for limits a schema cannot say (top_n
above the document count, documents over --max-documents), so `positive_data_acceptance` is
left out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server import run_server


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    bert_model: Path, tmp_path: Path
) -> None:
    st = Path(sys.executable).with_name("st")
    args = ["--model", f"{bert_model}=tiny-bert", "--max-documents", "50"]
    with run_server(args, log_dir=tmp_path) as server:
        result = subprocess.run(
            [
                str(st), "run", server.url + "/openapi.json",
                "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                "--max-examples", "40", "--seed", "7", "--request-timeout", "30",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps its cache in the working directory
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "passed" in result.stdout
        assert server.process.poll() is None, "the server must survive the fuzzing"
