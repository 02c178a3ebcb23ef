"""The model registry end to end: real servers, the real xinference-client, the rerankd CLI.

The seed tutorial's flow (register a custom rerank JSON with persistence, launch it with two
replicas, list, rerank through `Client(url).get_model(uid)`, terminate, restart) runs as it
is; then the refusals: 401/403 without the admin credential, 422 naming the field, 404, 409,
a broken model (failed state, the server keeps serving), and a corrupt registrations file.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from rerankd.registry.sqlite_store import SqliteStore
from tests.registry_helpers import SEED_NAME, launch, register, rerankd_cli, seed_spec
from tests.server import ServerProcess, run_server

QUERY = "Where is the Eiffel Tower?"
DOCUMENTS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Bananas are yellow.",
    "Kubernetes schedules pods across the nodes of a cluster.",
    "北京是中华人民共和国的首都。",
]
ADMIN, USER = "admin-key-1", "user-key-1"


def stored_registrations(data: Path) -> dict:
    """What the data directory's shared store holds (what every process of the host reads)."""
    return SqliteStore(data).snapshot().registrations


def native_scores(url: str, model: str) -> list[tuple[int, float]]:
    body = {"query": QUERY, "documents": DOCUMENTS, "model": model, "return_documents": False}
    response = httpx.post(f"{url}/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [(r["index"], r["score"]) for r in response.json()["results"]]


def test_the_seed_flow_with_xinference_client_and_the_cli(
    bert_model: Path, xlmr_model: Path, tmp_path: Path
) -> None:
    from xinference_client import RESTfulClient

    spec_file = tmp_path / "custom-bge-reranker-v2-m3.json"
    spec_file.write_text(json.dumps(seed_spec(xlmr_model)), encoding="utf-8")
    data = tmp_path / "data"
    args = ["--model", f"{bert_model}=first", "--data-dir", str(data), "--max-length", "128"]
    with run_server(args, log_dir=tmp_path) as server:
        endpoint = ["--endpoint", server.url]
        registered = rerankd_cli("register", "--file", str(spec_file), "--persist", *endpoint)
        assert registered.returncode == 0, registered.stderr
        assert f"registered {SEED_NAME} (persisted)" in registered.stdout
        launched = rerankd_cli("launch", SEED_NAME, "--replicas", "2", "--json", *endpoint)
        assert launched.returncode == 0, launched.stderr
        assert json.loads(launched.stdout) == {
            "model_uid": SEED_NAME,
            "state": "ready",
            "error": None,
        }

        table = rerankd_cli("list", *endpoint, env={"COLUMNS": "200"})
        assert table.returncode == 0 and SEED_NAME in table.stdout and "ready" in table.stdout
        listed = {m["id"]: m for m in json.loads(rerankd_cli("list", "--json", *endpoint).stdout)}
        assert listed[SEED_NAME]["replicas"] == 2 and listed[SEED_NAME]["devices"] == ["cpu", "cpu"]
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["first", SEED_NAME]
        assert all(m["model_type"] == "rerank" and m["state"] == "ready" for m in models)

        client = RESTfulClient(server.url)
        assert set(client.list_models()) == {"first", SEED_NAME}
        model = client.get_model(SEED_NAME)
        response = model.rerank(DOCUMENTS, QUERY)
        got = [(r["index"], r["relevance_score"]) for r in response["results"]]
        expected = native_scores(server.url, SEED_NAME)
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected])
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        describe = client.describe_model(SEED_NAME)
        assert describe["model_name"] == SEED_NAME and describe["replica"] == 2

        client.terminate_model(SEED_NAME)
        assert list(client.list_models()) == ["first"]
        gone = httpx.post(
            f"{server.url}/v1/rerank",
            json={"model": SEED_NAME, "query": QUERY, "documents": DOCUMENTS},
        )
        assert gone.status_code == 404 and "'first'" in gone.json()["error"]["message"]
        logs = server.logs()
        for action in ("register", "launch", "terminate"):
            assert f"registry {action} {SEED_NAME} by ip:127.0.0.1" in logs

    assert list(stored_registrations(data)) == [SEED_NAME]
    with run_server(args, log_dir=tmp_path) as server:
        client = RESTfulClient(server.url)
        names = [r["model_name"] for r in client.list_model_registrations("rerank")]
        assert SEED_NAME in names
        assert client.get_model_registration("rerank", SEED_NAME)["model_uri"] == str(xlmr_model)
        uid = client.launch_model(SEED_NAME, model_type="rerank", replica=2)
        result = client.get_model(uid).rerank(DOCUMENTS, QUERY, top_n=2)
        assert [r["index"] for r in result["results"]] == [i for i, _ in expected[:2]]
        client.terminate_model(uid)
        client.unregister_model("rerank", SEED_NAME)
        assert SEED_NAME not in [r["model_name"] for r in client.list_model_registrations("rerank")]
    assert stored_registrations(data) == {}


@pytest.fixture(scope="module")
def admin_server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("admin")
    args = [
        "--model", f"{bert_model}=first", "--data-dir", str(tmp / "data"), "--max-length", "64",
        "--api-keys", USER, "--admin-keys", ADMIN,
    ]  # fmt: skip
    with run_server(args, log_dir=tmp) as server:
        yield server


def test_changes_need_the_admin_credential(admin_server: ServerProcess, xlmr_model: Path) -> None:
    url, spec = admin_server.url, seed_spec(xlmr_model, model_name="guarded")
    assert register(url, spec).status_code == 401
    refused = register(url, spec, key=USER)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert launch(url, "builtin", key=USER).status_code == 403
    assert httpx.delete(f"{url}/v1/models/first", headers={"X-API-Key": USER}).status_code == 403
    # Reading needs ordinary access only.
    listed = httpx.get(f"{url}/v1/models", headers={"X-API-Key": USER})
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == "first"
    assert httpx.get(f"{url}/v1/models").status_code == 401

    assert register(url, spec, key=ADMIN).status_code == 200
    assert "registry register guarded by key:" in admin_server.logs()


def test_xinference_client_with_the_admin_key(
    admin_server: ServerProcess, xlmr_model: Path
) -> None:
    from xinference_client import RESTfulClient

    client = RESTfulClient(admin_server.url, api_key=ADMIN)
    spec = seed_spec(xlmr_model, model_name="via-client")
    client.register_model(model_type="rerank", model=json.dumps(spec), persist=False)
    uid = client.launch_model("via-client", model_type="rerank")
    assert client.get_model(uid).rerank(DOCUMENTS, QUERY)["results"]
    client.terminate_model(uid)
    with pytest.raises(RuntimeError, match="admin"):
        RESTfulClient(admin_server.url, api_key=USER).launch_model(
            "via-client", model_type="rerank"
        )


def test_bad_requests_get_the_right_status(admin_server: ServerProcess, xlmr_model: Path) -> None:
    url = admin_server.url
    missing_name = register(url, {"model_uri": str(xlmr_model)}, key=ADMIN)
    assert missing_name.status_code == 422 and "model.model_name" in missing_name.json()["detail"]
    bad_language = register(url, seed_spec(xlmr_model, model_name="x", language=3), key=ADMIN)
    assert bad_language.status_code == 422 and "model.language" in bad_language.json()["detail"]
    bad_json = httpx.post(
        f"{url}/v1/model_registrations/rerank",
        json={"model": "{not json", "persist": False},
        headers={"X-API-Key": ADMIN},
    )
    assert bad_json.status_code == 422 and "model: not valid JSON" in bad_json.json()["detail"]
    bad_replica = launch(url, "builtin", key=ADMIN, replica="two")
    assert bad_replica.status_code == 422 and "replica" in bad_replica.json()["detail"]
    llm = launch(url, "builtin", key=ADMIN, model_type="LLM")
    assert llm.status_code == 422 and "model_type" in llm.json()["detail"]

    unknown = launch(url, "no-such-registration", key=ADMIN)
    assert unknown.status_code == 404 and "'builtin'" in unknown.json()["detail"]
    assert httpx.delete(f"{url}/v1/models/nothing", headers={"X-API-Key": ADMIN}).status_code == 404

    spec = seed_spec(xlmr_model, model_name="twice")
    assert register(url, spec, key=ADMIN).status_code == 200
    again = register(url, spec, key=ADMIN)
    assert again.status_code == 409 and "already registered" in again.json()["detail"]
    replaced = httpx.post(
        f"{url}/v1/model_registrations/rerank",
        json={"model": json.dumps({**spec, "language": ["fr"]}), "replace": True},
        headers={"X-API-Key": ADMIN},
    )
    assert replaced.status_code == 200 and replaced.json()["language"] == ["fr"]
    assert launch(url, "twice", key=ADMIN).status_code == 200
    assert launch(url, "twice", key=ADMIN, model_uid="twice").status_code == 409
    running = httpx.delete(
        f"{url}/v1/model_registrations/rerank/twice", headers={"X-API-Key": ADMIN}
    )
    assert running.status_code == 409 and "terminate it first" in running.json()["detail"]
    assert httpx.delete(f"{url}/v1/models/twice", headers={"X-API-Key": ADMIN}).status_code == 200


def test_a_broken_model_fails_and_the_server_keeps_serving(
    admin_server: ServerProcess, bert_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(bert_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00 these are not weights")
    url = admin_server.url
    assert register(url, seed_spec(broken, model_name="broken"), key=ADMIN).status_code == 200

    failed = launch(url, "broken", key=ADMIN)
    assert failed.status_code == 400 and "failed to load" in failed.json()["detail"]
    described = httpx.get(f"{url}/v1/models/broken", headers={"X-API-Key": USER}).json()
    assert described["state"] == "failed" and described["error"]
    # `rerankd list` in an 80-column terminal: the error on one line, below the table.
    env = {"COLUMNS": "80", "RERANKD_API_KEY": USER}
    listed = rerankd_cli("list", "--endpoint", url, env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"broken (failed): {described['error']}" in listed.stdout.splitlines()
    assert httpx.get(f"{url}/health").status_code == 200
    ok = httpx.post(
        f"{url}/rerank",
        json={"query": QUERY, "documents": DOCUMENTS, "model": "first"},
        headers={"X-API-Key": USER},
    )
    assert ok.status_code == 200
    refused = httpx.post(
        f"{url}/rerank",
        json={"query": QUERY, "documents": DOCUMENTS, "model": "broken"},
        headers={"X-API-Key": USER},
    )
    assert refused.status_code == 404 and "failed to load" in refused.json()["error"]["message"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'rerankd_model_load_failures_total{model="broken"} 1.0' in metrics
    assert 'rerankd_model_state{model="broken",state="failed"} 1.0' in metrics

    # Without waiting, the launch answers "loading" and the failure shows on the model route.
    admin = {"X-API-Key": ADMIN}
    assert httpx.delete(f"{url}/v1/models/broken", headers=admin).status_code == 200
    body = {"model_name": "broken", "model_type": "rerank", "model_uid": "broken-again"}
    started = httpx.post(f"{url}/v1/models?wait_ready=false", json=body, headers=admin)
    assert started.status_code == 200 and started.json()["state"] in ("loading", "failed")
    state = started.json()["state"]
    for _ in range(600):
        state = httpx.get(f"{url}/v1/models/broken-again", headers=admin).json()["state"]
        if state != "loading":
            break
        time.sleep(0.1)
    assert state == "failed"
    assert httpx.delete(f"{url}/v1/models/broken-again", headers=admin).status_code == 200
    assert 'model="broken-again"' not in httpx.get(f"{url}/metrics").text


def test_a_corrupt_registrations_file_is_set_aside(
    bert_model: Path, xlmr_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "registrations.json").write_text('{"registrations": [{"model_na', encoding="utf-8")
    configmap = tmp_path / "configmap.json"
    configmap.write_text(
        json.dumps([seed_spec(xlmr_model), {"model_name": "no-source"}]), encoding="utf-8"
    )
    args = ["--model", SEED_NAME, "--data-dir", str(data), "--max-length", "64"]
    env = {"RERANKD_REGISTRATIONS_FILE": str(configmap)}
    with run_server(args, env=env, log_dir=tmp_path) as server:
        aside = list(data.glob("registrations.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_text().startswith('{"registrations"')
        assert not (data / "registrations.json").exists()
        logs = server.logs()
        assert "is unreadable" in logs and "moved aside" in logs
        assert "entry 1 skipped: model_uri: model_uri or model_id is required" in logs
        # The ConfigMap's registration was launched by --model NAME at start-up.
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == [SEED_NAME]
        info = httpx.get(f"{server.url}/info").json()
        assert any("moved aside" in p for p in info["registry_problems"])
        fixed = httpx.delete(f"{server.url}/v1/model_registrations/rerank/{SEED_NAME}")
        assert fixed.status_code == 409 and "file" in fixed.json()["detail"]
        assert (
            register(server.url, seed_spec(bert_model, model_name="new"), persist=True).status_code
            == 200
        )
    assert list(stored_registrations(data)) == ["new"]
