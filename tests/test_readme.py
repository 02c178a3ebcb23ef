"""Every curl command in the README runs as written against a real server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.server import run_server

README = Path(__file__).resolve().parents[1] / "README.md"
TUTORIAL_QUERY = "苹果手机有哪些新功能?"  # the seed tutorial's request, in Chinese


def readme_curl_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


def test_readme_curl_examples_work(
    tmp_path: Path, qwen3_reranker: Path, colbert_model: Path, jina_reranker_v3: Path
) -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 7
    # The README's LLM example names Qwen3-Reranker-0.6B: a tiny Qwen3 reranker stands in.
    # The ColBERT example names lightonai/colbertv2.0: a tiny PyLate-format ColBERT stands in.
    args = [
        "--model",
        "builtin",
        "--model",
        f"{qwen3_reranker}=Qwen3-Reranker-0.6B",
        "--model",
        f"{colbert_model}=colbertv2.0",
        "--model",
        f"{jina_reranker_v3}=jina-reranker-v3",  # the listwise example
    ]
    tutorial_seen = False
    with run_server(args, log_dir=tmp_path) as server:
        for command in commands:
            command = command.replace("http://localhost:8000", server.url)
            result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            if "/metrics" in command:
                assert "rerankd_requests_total" in result.stdout
                continue
            body = json.loads(result.stdout)
            assert "error" not in body, (command, body)
            if TUTORIAL_QUERY in command:  # `curl -s` hides headers: the JSON must say it
                (warning,) = body["warnings"]
                assert "English-only" in warning and "Han script" in warning, body
                assert "--model BAAI/bge-reranker-v2-m3" in warning
                tutorial_seen = True
            elif isinstance(body, dict) and "warnings" in body:
                assert body["warnings"] == [], (command, body)
        assert tutorial_seen, "the README lost the tutorial's request"


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
