"""Every curl command in the README runs as written against a real server."""

from __future__ import annotations

import json
import os
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


ROOT = README.parent


def fresh_shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`command` pasted into a new bash after the README's `source .venv/bin/activate`: no
    profile, no inherited PATH to the venv (only the system's), nothing else set up."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "HF_HUB_OFFLINE": "1",
        # The checkout under test (a worktree may share another checkout's .venv).
        "PYTHONPATH": str(ROOT),
    }
    script = f"source .venv/bin/activate && {command}"
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def readme_rerankd_subcommands() -> set[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), re.DOTALL)
    found = set()
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split("  #")[0].split()
            if len(words) > 1 and words[0] == "rerankd":
                found.add(words[1])
    return found


def test_readme_activation_comes_right_after_the_two_commands() -> None:
    text = README.read_text()
    assert text.index("source .venv/bin/activate") < text.index("## Playground")
    assert ".venv/bin/rerankd" not in text  # one way to run it, everywhere


def test_every_readme_rerankd_command_runs_in_a_fresh_shell() -> None:
    """Each subcommand the README uses is found on the PATH the activation gives, and parses."""
    subcommands = readme_rerankd_subcommands()
    assert {"serve", "list", "eval", "finetune"} <= subcommands
    bare = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "command -v rerankd"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert bare.returncode != 0, "rerankd must not be on the bare PATH, or this proves nothing"
    helps = " && ".join(f"rerankd {name} --help >/dev/null" for name in sorted(subcommands))
    result = fresh_shell(helps, timeout=600)
    assert result.returncode == 0, result.stderr
    ranked = fresh_shell(
        'rerankd rerank --model builtin --json "capital of France" "Paris is in France." '
        '"Bananas are yellow."'
    )
    assert ranked.returncode == 0, ranked.stderr
    assert json.loads(ranked.stdout)[0]["document"] == "Paris is in France."


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
            result = fresh_shell(command)
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
