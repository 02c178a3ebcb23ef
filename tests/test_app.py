"""The app in-process with a stand-in service: failure paths a real model never takes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from rerankd.api import create_app
from rerankd.config import Settings
from rerankd.errors import BackendFailed
from rerankd.service import RerankRequest, RerankResult, RerankService


class BrokenService(RerankService):
    """Loads instantly; every rerank fails the way `failure` says."""

    def __init__(self, settings: Settings, failure: Exception) -> None:
        super().__init__(settings)
        self.failure = failure

    def load(self) -> None:
        self.ready = True

    async def rerank(self, request: RerankRequest) -> RerankResult:
        raise self.failure


def client_for(failure: Exception, **settings: object) -> TestClient:
    config = Settings(**settings)  # type: ignore[arg-type]
    return TestClient(
        create_app(config, service=BrokenService(config, failure)), raise_server_exceptions=False
    )


@pytest.fixture()
def crashing() -> Iterator[TestClient]:
    with client_for(RuntimeError("secret internals at /srv/weights: CUDA error 700")) as client:
        yield client


def test_an_unexpected_error_is_a_bare_500(crashing: TestClient) -> None:
    response = crashing.post("/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal server error",
        "type": "internal_error",
        "code": 500,
    }
    assert "secret" not in response.text and "Traceback" not in response.text
    # ... and the server goes on (the stand-in serves no model, so /health says so with a 503)
    assert crashing.get("/health").json()["status"] == "no model served"
    assert crashing.post("/rerank", json={"query": "q", "documents": ["d"]}).status_code == 500


def test_a_backend_failure_hides_its_cause() -> None:
    failure = BackendFailed("the model backend failed on this request's batch")
    failure.__cause__ = RuntimeError("secret internals")
    with client_for(failure) as client:
        response = client.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 500 and "secret" not in response.text
    assert "backend failed" in response.json()["error"]["message"]


def test_cors_is_off_unless_origins_are_configured() -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with client_for(RuntimeError()) as closed:
        assert (
            "access-control-allow-origin"
            not in closed.options("/rerank", headers=preflight).headers
        )
    with client_for(RuntimeError(), cors_origins=["https://app.example"]) as open_:
        response = open_.options("/rerank", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = open_.options("/rerank", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_document_text_is_logged_only_at_debug(
    bert_model, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    service = RerankService(Settings(model=[str(bert_model)], max_length=64))
    await asyncio.to_thread(service.load)
    # Capture on rerankd's own logger: an in-process `logs.configure` by an earlier test
    # replaces the root handlers, caplog's among them.
    logging.getLogger("rerankd").addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="rerankd"):
            await service.rerank(RerankRequest("q", ["private zebra passage"]))
        assert not any("zebra" in str(vars(record)) for record in caplog.records)
        with caplog.at_level(logging.DEBUG, logger="rerankd"):
            await service.rerank(RerankRequest("q", ["private zebra passage two"]))
        assert any("zebra" in str(vars(record)) for record in caplog.records)
    finally:
        logging.getLogger("rerankd").removeHandler(caplog.handler)
        await service.close()
