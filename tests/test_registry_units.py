"""The registry's parts without a server: specs, the store, placement, the core budget, scopes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from rerankd.api.security import Authenticator
from rerankd.config import Settings
from rerankd.registry import LaunchRequest, Registration
from rerankd.registry.cores import CoreBudget
from rerankd.registry.store import RegistrationStore, read_registrations_file
from tests.registry_helpers import SEED_NAME, SEED_SPEC


def test_the_seed_spec_is_accepted_as_it_is() -> None:
    spec = json.loads(SEED_SPEC.read_text())
    registration = Registration.model_validate(spec)
    assert registration.model_name == SEED_NAME
    assert registration.source == "/path/to/bge-reranker-v2-m3"  # the local copy wins
    assert registration.public() == spec  # reads back as it was written


def test_xinference_variants() -> None:
    nested = Registration.model_validate(
        {
            "version": 2,
            "model_name": "nested",
            "language": "en",
            "max_tokens": 512,
            "model_specs": [
                {"model_format": "pytorch", "model_id": "org/model", "model_hub": "hf"}
            ],
        }
    )
    assert nested.source == "org/model" and nested.language == ["en"]
    assert Registration(model_name="u", model_uri="file:///models/x").source == "/models/x"
    assert Registration(model_name="hub", model_id="org/m").source == "org/m"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"model_id": "org/m"}, "model_name"),
        ({"model_name": "n"}, "model_uri"),
        ({"model_name": "bad name!", "model_id": "x"}, "model_name"),
        ({"model_name": "../escape", "model_id": "x"}, "model_name"),
        ({"model_name": "n", "model_id": "x", "dtype": "float8"}, "dtype"),
        ({"model_name": "n", "model_id": "x", "backend": "tensorrt"}, "backend"),
        ({"model_name": "n", "model_id": "x", "max_length": 2}, "max_length"),
    ],
)
def test_a_bad_spec_names_its_field(spec: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Registration.model_validate(spec)
    assert [e["loc"][0] for e in caught.value.errors()] == [field]


def test_launch_placement() -> None:
    assert LaunchRequest(model_name="m", gpu_idx=[0, 1], replica=2).devices == ["cuda:0", "cuda:1"]
    assert LaunchRequest(model_name="m", gpu_idx=1).devices == ["cuda:1"]
    assert LaunchRequest(model_name="m", device="cuda:0,cuda:1").devices == ["cuda:0", "cuda:1"]
    assert LaunchRequest(model_name="m").devices is None
    for bad in (
        {"gpu_idx": [0], "device": "cuda:0"},
        {"gpu_idx": [-1]},
        {"device": "tpu:0"},
        {"model_type": "LLM"},
        {"replica": 0},
        {"replica": 2, "replicas": 3},
    ):
        with pytest.raises(ValidationError):
            LaunchRequest(model_name="m", **bad)


def test_the_core_budget_splits_side_by_side_models() -> None:
    budget = CoreBudget(8)
    assert budget.take("only", cpu_replicas=1, threads=None) == 8
    budget.give_back("only")
    # Two start-up models of one replica each: the first leaves room for the second.
    assert budget.take("a", cpu_replicas=1, threads=None, planned=1) == 4
    assert budget.take("b", cpu_replicas=1, threads=None) == 4
    # A third launch with two replicas: 8 cores over 4 replicas.
    assert budget.take("c", cpu_replicas=2, threads=None) == 2
    assert budget.summary()["held"] == {"a": 4, "b": 4, "c": 4}
    budget.give_back("c")
    assert budget.take("d", cpu_replicas=1, threads=3) == 3  # explicit, counted as given
    assert budget.take("gpu", cpu_replicas=0, threads=None) >= 1
    assert "gpu" not in budget.summary()["held"]  # type: ignore[operator]


def test_the_store_writes_atomically_and_reads_back(tmp_path: Path) -> None:
    store = RegistrationStore(tmp_path / "data")
    kept = [Registration(model_name="a", model_id="org/a", language=["en"], custom_field=1)]
    store.save(kept)
    assert store.load() == kept
    assert store.load()[0].public()["custom_field"] == 1  # unknown Xinference fields survive
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["registrations.json"]


def test_a_corrupt_store_is_moved_aside_and_one_bad_entry_is_skipped(tmp_path: Path) -> None:
    store = RegistrationStore(tmp_path)
    for content in ('{"registrations": [', "[]"):
        store.path.write_text(content)
        assert store.load() == []
        assert not store.path.exists()
    assert len(list(tmp_path.glob("registrations.json.corrupt-*"))) == 2
    good = {"model_name": "ok", "model_id": "o/k"}
    store.path.write_text(json.dumps({"registrations": [{"model_id": "x"}, good]}))
    assert [r.model_name for r in store.load()] == ["ok"]  # the valid entry stays
    assert "entry 0 skipped" in store.problems[-1] and "model_name" in store.problems[-1]


def test_the_registrations_file_skips_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "configmap.json"
    problems: list[str] = []
    path.write_text(json.dumps({"registrations": [{"model_name": "ok", "model_id": "o/k"}, {}]}))
    assert [r.model_name for r in read_registrations_file(path, problems)] == ["ok"]
    assert len(problems) == 1 and "entry 1" in problems[0]
    path.write_text(json.dumps({"model_name": "single", "model_id": "o/s"}))
    assert [r.model_name for r in read_registrations_file(path, problems)] == ["single"]
    path.write_text("not json")
    assert read_registrations_file(path, problems) == [] and "unreadable" in problems[-1]
    assert os.path.exists(path)  # an operator's file is never moved


def test_admin_keys_and_the_jwt_admin_scope() -> None:
    settings = Settings(api_keys=["user"], admin_keys=["admin"], jwt_secret="s" * 32)
    auth = Authenticator(settings)
    assert auth.authenticate("admin").admin and not auth.authenticate("user").admin

    def token(**claims: object) -> str:
        return jwt.encode({"sub": "ci", "exp": time.time() + 60, **claims}, "s" * 32, "HS256")

    assert auth.authenticate(token(scope="read rerankd:admin")).admin
    assert auth.authenticate(token(scp=["rerankd:admin"])).admin
    reader = auth.authenticate(token(scope="read"))
    assert reader.authenticated and not reader.admin and reader.name == "jwt:ci"
    # Admin keys alone: reranking stays open (not required), changes need the key.
    only_admin = Authenticator(Settings(admin_keys=["admin"]))
    assert only_admin.enabled and not only_admin.required


def test_closing_engines_drops_their_weights(bert_model: Path) -> None:
    from rerankd.engine import EngineOptions
    from rerankd.engine.engine import load_engine
    from rerankd.registry.loader import close_engines

    engine = load_engine(str(bert_model), EngineOptions(max_length=32))
    backend = engine.backend
    engines = [engine]
    close_engines(engines)
    assert engines == [] and backend._head is None  # type: ignore[attr-defined]


def test_a_loaded_model_is_frozen_out_of_the_collector_and_still_freed_on_terminate(
    bert_model: Path,
) -> None:
    """settle_heap() freezes what a load leaves (no full collection walks it again);
    give_memory_back() thaws it, so a terminated model's reference cycles are collected too."""
    import gc
    import weakref

    from rerankd.engine import EngineOptions
    from rerankd.engine.engine import load_engine
    from rerankd.registry.loader import close_engines, give_memory_back, settle_heap

    try:
        engine = load_engine(str(bert_model), EngineOptions(max_length=32))
        head = engine.backend._head  # type: ignore[attr-defined]
        head.test_cycle = {"module": head}  # a reference cycle through the model
        freed = weakref.ref(head)
        del head
        settle_heap()
        assert gc.get_freeze_count() > 0
        close_engines([engine])
        del engine
        gc.collect()
        assert freed() is not None, "a frozen cycle outlives an ordinary collection"
        give_memory_back()
        assert freed() is None, "the terminated model's cycle was not collected"
    finally:
        gc.unfreeze()
