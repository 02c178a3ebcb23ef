"""The reranking server most tutorials show, kept as plain as they keep it.

FastAPI, the model loaded at import, one synchronous route that hands the whole request to
sentence-transformers `CrossEncoder.predict` (default batch size 32) and sorts the result.
FastAPI runs sync routes in a thread pool, so concurrent requests each run their own forward
pass, competing for the same cores; nothing batches across requests. The only additions
are a `/health` route and the model directory from the environment, so the benchmark
drives it like the others. Started the tutorial way:

    TUTORIAL_MODEL=DIR uvicorn bench.baselines.tutorial_server:app --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import CrossEncoder

MODEL = os.environ.get("TUTORIAL_MODEL", "BAAI/bge-reranker-v2-m3")
MAX_LENGTH = int(os.environ.get("TUTORIAL_MAX_LENGTH", "512"))

app = FastAPI(title="reranker (tutorial)")
model = CrossEncoder(MODEL, max_length=MAX_LENGTH)


class RerankRequest(BaseModel):
    query: str
    documents: list[str]


class ScoredDocument(BaseModel):
    document: str
    score: float


class RerankResponse(BaseModel):
    query: str
    results: list[ScoredDocument]


@app.post("/rerank")
def rerank(request: RerankRequest) -> RerankResponse:
    scores = model.predict([(request.query, d) for d in request.documents])
    ranked = sorted(zip(request.documents, scores, strict=True), key=lambda x: -x[1])
    return RerankResponse(
        query=request.query,
        results=[ScoredDocument(document=d, score=float(s)) for d, s in ranked],
    )


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
