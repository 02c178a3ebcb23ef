"""`--model-load-timeout`: a launch whose load hangs fails with a clear error, and the server
goes on serving and launching (tests/fault_server.py makes a `slowload` model's load hang)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.fault_server import SLOW_LOAD
from tests.registry_helpers import launch, register, seed_spec
from tests.server import run_server


def test_a_load_past_the_timeout_fails_the_launch_and_the_server_goes_on(
    bert_model: Path, xlmr_model: Path, tmp_path: Path
) -> None:
    slow = tmp_path / f"{SLOW_LOAD}-xlmr"
    shutil.copytree(xlmr_model, slow)
    args = ["--model", f"{bert_model}=first", "--data-dir", str(tmp_path / "data")]
    args += ["--model-load-timeout", "3", "--max-length", "128"]
    args += ["--model-roots", f"{tmp_path},{xlmr_model.parent}"]
    env = {"RERANKD_TEST_LOAD_SECONDS": "900"}  # hangs for the whole test
    with run_server(args, env=env, log_dir=tmp_path, module="tests.fault_server") as server:
        url = server.url
        assert register(url, seed_spec(slow, model_name="slow")).status_code == 200
        assert register(url, seed_spec(xlmr_model, model_name="fast")).status_code == 200

        failed = launch(url, "slow")
        assert failed.status_code == 400, failed.text
        assert "--model-load-timeout (3 s)" in failed.json()["error"]["message"]
        state = httpx.get(f"{url}/v1/models/slow", timeout=30).json()
        assert state["state"] == "failed" and "model-load-timeout" in state["error"]

        # The loader is not stuck behind the hung load: the next launch loads and serves.
        ready = launch(url, "fast")
        assert ready.status_code == 200 and ready.json()["state"] == "ready", ready.text
        for model in ("first", "fast"):
            body = {"query": "q", "documents": ["a", "b"], "model": model}
            assert httpx.post(f"{url}/rerank", json=body, timeout=60).status_code == 200

        # SIGTERM ends the process although the abandoned load still hangs (900 s): the loader
        # thread never holds the exit (ThreadPoolExecutor's workers are joined at exit).
        server.terminate()
        assert server.process.wait(timeout=25) == 0, server.logs()[-2000:]
