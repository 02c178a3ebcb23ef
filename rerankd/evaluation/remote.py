"""A stand-in for `rerankd.Client` while it is written: the native `POST /rerank` over httpx.

TODO(lead): when `rerankd.Client` lands in main, delete this module and import
`rerankd.Client` in `scorers.py`; the call below has the same signature and result shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class RemoteResult:
    index: int
    score: float
    document: str | None


@dataclass(frozen=True)
class RemoteRanking:
    results: list[RemoteResult]


class Client:
    """`Client(base_url, api_key=None, timeout=...).rerank(query, documents, ...)`."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def rerank(
        self,
        query: str,
        documents: list[str],
        model: str | None = None,
        top_n: int | None = None,
        raw_scores: bool = False,
    ) -> RemoteRanking:
        body: dict[str, object] = {
            "query": query,
            "documents": documents,
            "raw_scores": raw_scores,
            "return_documents": False,
        }
        if model is not None:
            body["model"] = model
        if top_n is not None:
            body["top_n"] = top_n
        response = self._http.post("/rerank", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"POST /rerank answered {response.status_code}: {_message(response)}"
            )
        return RemoteRanking(
            [
                RemoteResult(r["index"], r["score"], r.get("document"))
                for r in response.json()["results"]
            ]
        )

    def close(self) -> None:
        self._http.close()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:  # noqa: BLE001 - any body that is not rerankd's error shape
        return response.text[:200]
