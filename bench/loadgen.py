"""A closed-loop load driver: C clients, each sending its next request when the last returns.

Bounded in requests and in seconds, aimed at loopback addresses only. Every response is
checked to carry exactly one score per document; anything else counts as an error, with a
sample kept for the report. Throughput is completed pairs over the time from the first
request to the last response, so a slow tail is not hidden by stopping the clock early.

    python -m bench.loadgen --url http://127.0.0.1:8000 --dialect rerankd -c 4 -n 16 -t 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench.rss import PeakRss
from bench.workload import Request, WorkloadSpec, make_requests

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ResponseError(ValueError):
    """A response that does not carry one score per document."""


@dataclass(frozen=True)
class Dialect:
    """How one server wants a rerank request, and where its scores are in the reply."""

    name: str
    path: str
    body: Callable[[Request, str], dict]
    scores: Callable[[dict, Request], list[float]]


def _indexed_scores(results: list[dict], request: Request, key: str) -> list[float]:
    scores: list[float | None] = [None] * len(request.documents)
    for item in results:
        index = item["index"]
        if not 0 <= index < len(scores) or scores[index] is not None:
            raise ResponseError(f"index {index} out of range or repeated")
        scores[index] = float(item[key])
    if any(s is None for s in scores):
        raise ResponseError(f"{scores.count(None)} documents have no score")
    return scores  # type: ignore[return-value]


def _tutorial_scores(reply: dict, request: Request) -> list[float]:
    """The tutorial returns documents, not indices: map them back by text."""
    by_text = {item["document"]: float(item["score"]) for item in reply["results"]}
    if len(reply["results"]) != len(request.documents) or len(by_text) != len(
        set(request.documents)
    ):
        raise ResponseError(f"{len(reply['results'])} results for {len(request.documents)}")
    return [by_text[d] for d in request.documents]


DIALECTS = {
    "rerankd": Dialect(
        "rerankd",
        "/rerank",
        lambda r, model: {"query": r.query, "documents": r.documents, "return_documents": False},
        lambda reply, r: _indexed_scores(reply["results"], r, "score"),
    ),
    "infinity": Dialect(
        "infinity",
        "/rerank",
        lambda r, model: {
            "query": r.query,
            "documents": r.documents,
            "model": model,
            "return_documents": False,
        },
        lambda reply, r: _indexed_scores(reply["results"], r, "relevance_score"),
    ),
    "xinference": Dialect(
        "xinference",
        "/v1/rerank",
        lambda r, model: {
            "model": model,
            "query": r.query,
            "documents": r.documents,
            "return_documents": False,
        },
        lambda reply, r: _indexed_scores(reply["results"], r, "relevance_score"),
    ),
    "tutorial": Dialect(
        "tutorial",
        "/rerank",
        lambda r, model: {"query": r.query, "documents": r.documents},
        _tutorial_scores,
    ),
}


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    concurrency: int
    requests: int = 0
    pairs: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)  # request indices, in completion order
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    scores: dict[int, list[list[float]]] = field(default_factory=dict)  # request index -> seen
    peak_rss_bytes: int = 0  # of the server's process tree, when its pid was given

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def summary(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 2),
            "pairs_per_s": round(self.pairs_per_s, 2),
            "requests_per_s": round(self.requests_per_s, 3),
            "p50_s": round(self.percentile(50), 3),
            "p95_s": round(self.percentile(95), 3),
            "p99_s": round(self.percentile(99), 3),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
        }


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the load driver only targets loopback addresses, not {host!r}")


async def drive(
    url: str,
    dialect: Dialect,
    requests: list[Request],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    model: str = "",
    keep_scores_for: int = 0,
    server_pid: int | None = None,
    timeout: float = 900.0,
) -> LoadResult:
    """Run C clients until `max_requests` are sent or `max_seconds` pass, then drain.

    Each client sends at least one request, so `max_seconds=0` means exactly one round.

    Requests are taken in order (cycling), so every system sees the same sequence; scores of
    the first `keep_scores_for` distinct requests are kept for the accuracy check.
    """
    check_loopback(url)
    result = LoadResult(concurrency)
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    last_done = started

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued, last_done
        first = True  # every client sends at least one request, whatever the deadline
        while issued < max_requests and (first or time.perf_counter() < deadline):
            first = False
            index = issued % len(requests)
            issued += 1
            request = requests[index]
            sent = time.perf_counter()
            try:
                reply = await http.post(dialect.path, json=dialect.body(request, model))
                reply.raise_for_status()
                scores = dialect.scores(reply.json(), request)
            except (httpx.HTTPError, ResponseError, KeyError, TypeError, ValueError) as exc:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            now = time.perf_counter()
            result.latencies.append(now - sent)
            result.completed.append(index)
            result.requests += 1
            result.pairs += len(request.documents)
            last_done = max(last_done, now)
            if index < keep_scores_for:
                result.scores.setdefault(index, []).append(scores)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sampler = PeakRss(server_pid) if server_pid else nullcontext()
    with sampler:
        async with httpx.AsyncClient(
            base_url=url, timeout=timeout, limits=limits, trust_env=False
        ) as http:
            await asyncio.gather(*(client(http) for _ in range(concurrency)))
    result.seconds = last_done - started
    if isinstance(sampler, PeakRss):
        result.peak_rss_bytes = sampler.bytes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default="rerankd")
    parser.add_argument("--model", default="", help="the model field, for servers that want one")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-n", "--requests", type=int, default=16, help="at most this many")
    parser.add_argument("-t", "--seconds", type=float, default=60.0, help="stop sending after")
    parser.add_argument("--documents", type=int, default=32)
    parser.add_argument("--pid", type=int, help="server pid, to report its peak RSS")
    args = parser.parse_args()

    requests = make_requests(min(args.requests, 64), WorkloadSpec(documents=args.documents))
    result = asyncio.run(
        drive(
            args.url,
            DIALECTS[args.dialect],
            requests,
            concurrency=args.concurrency,
            max_requests=args.requests,
            max_seconds=args.seconds,
            model=args.model,
            server_pid=args.pid,
        )
    )
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
