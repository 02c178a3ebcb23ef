"""Hostile configurations and registrations against real servers (issue 21): an empty keys
file, an open registry beyond loopback, a terminated last model, /info's details, lone
surrogates and deep nesting, and `model_uri` outside the model roots or holding a FIFO."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.registry_helpers import launch, register, seed_spec
from tests.server import ServerProcess, free_port, run_server

ADMIN = "admin-key-for-hardening-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ROUTES = {
    "/rerank": {"query": "q", "documents": ["a", "b"]},
    "/v1/rerank": {"query": "q", "documents": ["a", "b"]},
    "/v1/reranking": {"query": "q", "input": ["a", "b"]},
    "/batch_rerank": {"queries": [{"query": "q", "documents": ["a", "b"]}]},
    "/v2/rerank": {"query": "q", "documents": ["a", "b"]},
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, bert_model: Path) -> Path:
    """A model root holding a copy of the test model, a FIFO model and a link outside."""
    root = tmp_path_factory.mktemp("roots")
    shutil.copytree(bert_model, root / "bert")
    fifo = root / "fifo-model"
    shutil.copytree(bert_model, fifo)
    weights = next(p for p in fifo.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.unlink()
    os.mkfifo(fifo / "model.bin")
    (root / "escape").symlink_to("/etc", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(roots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("hardening")
    args = ["--model", f"{roots / 'bert'}=first", "--max-length", "64"]
    args += ["--data-dir", str(tmp / "data"), "--model-roots", str(roots)]
    # Admin keys close the registry to anonymous callers: the registry tests below send ADMIN.
    args += ["--admin-keys", ADMIN]
    with run_server(args, log_dir=tmp) as running:
        yield running


def test_lone_surrogate_instruction_is_a_400_on_every_route(server: ServerProcess) -> None:
    for route, body in ROUTES.items():
        raw = json.dumps({**body, "instruction": "x"}).replace('"x"', '"\\ud800"')
        response = httpx.post(
            server.url + route, content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (route, response.text)
        assert "instruction" in response.text
    assert "Traceback" not in server.logs()


def test_deep_nesting_is_a_400(server: ServerProcess) -> None:
    raw = "[" * 100_000 + "]" * 100_000
    for route in ROUTES:
        response = httpx.post(
            server.url + route, content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (route, response.status_code)
        assert "nested too deeply" in response.json()["error"]["message"]
    nested = '{"query": "q", "documents": ["a"], "x": ' + "[" * 5000 + "]" * 5000 + "}"
    response = httpx.post(
        server.url + "/rerank", content=nested, headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert "RecursionError" not in server.logs()


@pytest.mark.parametrize("field", ["type", "language", "model_id", "instruction", "extra"])
def test_lone_surrogates_in_registrations_are_refused(
    server: ServerProcess, roots: Path, field: str
) -> None:
    spec = seed_spec(roots / "bert", model_name=f"bad-{field}", **{field: "SURROGATE"})
    body = {"model": spec, "persist": True}
    raw = json.dumps(body).replace('"SURROGATE"', '"\\udc80"')
    response = httpx.post(
        server.url + "/v1/model_registrations/rerank",
        content=raw,
        headers={"content-type": "application/json", **AUTH},
    )
    assert response.status_code in (400, 422), response.text
    assert "surrogate" in response.text
    # Nothing was kept: listings and persisted registrations still work.
    listed = httpx.get(server.url + "/v1/model_registrations/rerank?detailed=true", headers=AUTH)
    assert listed.status_code == 200
    assert f"bad-{field}" not in listed.text
    spec = seed_spec(roots / "bert", model_name=f"ok-{field}")
    ok = register(server.url, spec, persist=True, key=ADMIN)
    assert ok.status_code == 200, ok.text


def test_registration_field_lengths_and_family(server: ServerProcess, roots: Path) -> None:
    spec = seed_spec(roots / "bert", model_name="long", type="x" * 5000)
    long = register(server.url, spec, key=ADMIN)
    assert long.status_code in (400, 422) and "at most" in long.text
    spec = seed_spec(roots / "bert", model_name="fam", family="nope")
    family = register(server.url, spec, key=ADMIN)
    assert family.status_code in (400, 422) and "family" in family.text


def test_model_uri_only_under_the_roots(server: ServerProcess, roots: Path) -> None:
    answers = {}
    for name, uri in {
        "etc": "/etc",
        "missing": "/etc/no-such-directory-here",
        "dots": str(roots / ".." / ".."),
        "relative": "../..",
        "link": str(roots / "escape"),
    }.items():
        spec = seed_spec(roots / "bert", model_name=name, model_uri=uri)
        response = register(server.url, spec, key=ADMIN)
        assert response.status_code == 400, (name, response.text)
        answers[name] = response.json()["error"]["message"]
    # The same words whether or not the path outside exists.
    assert answers["etc"] == answers["missing"] == answers["link"]
    assert "model roots" in answers["etc"]


def test_a_fifo_in_the_model_directory_is_never_opened(server: ServerProcess, roots: Path) -> None:
    response = register(server.url, seed_spec(roots / "fifo-model", model_name="fifo"), key=ADMIN)
    assert response.status_code == 400
    assert "model.bin" in response.text and "not a regular file" in response.text
    # The loader is free: a good model still launches.
    good = register(server.url, seed_spec(roots / "bert", model_name="good"), key=ADMIN)
    assert good.status_code == 200
    launched = launch(server.url, "good", key=ADMIN)
    assert launched.status_code == 200 and launched.json()["state"] == "ready"


def test_health_says_no_model_is_served_after_the_last_terminate(
    roots: Path, tmp_path: Path
) -> None:
    """Also the open registry beyond loopback: `--open-registry` lets anyone terminate."""
    args = ["--model", f"{roots / 'bert'}=only", "--max-length", "64", "--host", "0.0.0.0"]
    args += ["--open-registry"]
    with run_server(args, log_dir=tmp_path) as running:
        assert httpx.delete(f"{running.url}/v1/models/only", timeout=60).status_code == 200
        health = httpx.get(running.url + "/health")
        assert health.status_code == 503
        assert health.json() == {"status": "no model served", "model_loaded": False}


def test_registry_and_info_beyond_loopback(roots: Path, tmp_path: Path) -> None:
    """Listening on every address with no credential: the registry is closed, /info terse.
    (`--open-registry` opens it: see the test of /health after the last terminate.)"""
    args = ["--model", f"{roots / 'bert'}=first", "--max-length", "64", "--host", "0.0.0.0"]
    with run_server(args, log_dir=tmp_path) as running:
        deleted = httpx.delete(f"{running.url}/v1/models/first")
        assert deleted.status_code == 403 and "--admin-keys" in deleted.text
        assert launch(running.url, "builtin").status_code == 403
        assert register(running.url, seed_spec(roots / "bert", model_name="x")).status_code == 403
        info = httpx.get(running.url + "/info").json()
        assert "pid" not in info and str(roots) not in json.dumps(info)
        assert httpx.get(running.url + "/health").json()["model_loaded"] is True
        card = httpx.get(f"{running.url}/v1/models/first").json()
        assert "launched_by" not in card and "source" not in card


def test_info_details_for_admins_only(server: ServerProcess, roots: Path) -> None:
    """On the module's server, started with --admin-keys ADMIN."""
    assert launch(server.url, "first", key=ADMIN, model_uid="second").status_code == 200
    anonymous = httpx.get(server.url + "/info").json()
    assert "pid" not in anonymous and "launched_by" not in json.dumps(anonymous)
    assert str(roots) not in json.dumps(anonymous)
    wrong = httpx.get(server.url + "/info", headers={"X-API-Key": "wrong"}).json()
    assert "pid" not in wrong
    admin = httpx.get(server.url + "/info", headers={"X-API-Key": ADMIN}).json()
    assert admin["pid"] == server.process.pid
    launched_by = {m["name"]: m["launched_by"] for m in admin["models"]}["second"]
    import hashlib

    bare = hashlib.sha256(ADMIN.encode()).hexdigest()
    assert launched_by.startswith("key:") and launched_by[4:] not in bare


@pytest.mark.parametrize("content", ["# only a comment\n\n", None])
def test_an_empty_or_unreadable_keys_file_refuses_to_start(
    tmp_path: Path, content: str | None
) -> None:
    keys = tmp_path / "keys.txt"
    if content is not None:
        keys.write_text(content)
    command = [sys.executable, "-m", "rerankd", "serve", "--port", str(free_port())]
    command += ["--api-keys-file", str(keys)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert str(keys) in done.stderr
    assert "no key" in done.stderr or "cannot be read" in done.stderr


def test_long_texts_are_cut_by_characters_before_tokenizing(bert_model: Path) -> None:
    """A 199k-character document sent to a 64-token model: only the characters 64 tokens
    could reach are tokenized (the real tokenizer runs; it is only watched)."""
    from rerankd.engine import LongDocPolicy
    from rerankd.engine.engine import load_engine
    from rerankd.engine.options import EngineOptions
    from rerankd.engine.tokenize import CHARS_PER_TOKEN_BOUND, cut_text

    engine = load_engine(str(bert_model), EngineOptions(max_length=64))
    tokenizer = engine.family.tokenizer  # type: ignore[attr-defined]
    seen: list[int] = []
    encode = tokenizer.encode

    def watched(texts: list[str]) -> list[list[int]]:
        seen.extend(len(t) for t in texts)
        return encode(texts)

    tokenizer.encode = watched
    words = "reranking keeps the best passages first " * 5000
    long = words[:199_000]
    engine.plan("query", [long], LongDocPolicy())
    assert max(seen) <= 64 * CHARS_PER_TOKEN_BOUND
    seen.clear()
    engine.plan("query", [long], LongDocPolicy(strategy="chunk", max_chunks_per_doc=4))
    assert 64 * CHARS_PER_TOKEN_BOUND < max(seen) <= 4 * 64 * CHARS_PER_TOKEN_BOUND
    # The cut never changes what the model reads: the same sequences as the first 2,048 chars.
    short = cut_text(long, 64)
    assert (
        engine.plan("query", [long], LongDocPolicy()).sequences
        == engine.plan("query", [short], LongDocPolicy()).sequences
    )
    assert cut_text(long, 64, "left") == long[-64 * CHARS_PER_TOKEN_BOUND :]
