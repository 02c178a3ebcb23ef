"""Run inside LiteLLM's own virtual environment (see tests/test_integrations_litellm.py):
`litellm.rerank` once per provider against a rerankd server; one JSON line per provider.

Usage: python probe.py BASE_URL MODEL QUERY_JSON DOCUMENTS_JSON
"""

from __future__ import annotations

import json
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of the price list: offline

import litellm  # noqa: E402

# provider -> the api_base a user gives LiteLLM for rerankd (README, "Clients").
PROVIDERS = {
    "cohere": "",
    "litellm_proxy": "",
    "infinity": "",
    "jina_ai": "",
    "voyage": "",
    "hosted_vllm": "/v1",
    "together_ai": "/v1",
    "huggingface": "",
}


def main() -> None:
    url, model, query, documents = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:5])
    for provider, suffix in PROVIDERS.items():
        try:
            response = litellm.rerank(
                model=f"{provider}/{model}",
                query=query,
                documents=documents,
                api_base=url + suffix,
                api_key="not-needed",
                top_n=3,
                return_documents=True,
            )
            results = [
                {
                    "index": r["index"],
                    "relevance_score": r["relevance_score"],
                    "text": (r.get("document") or {}).get("text"),
                }
                for r in response.results
            ]
            print(json.dumps({"provider": provider, "results": results}), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            print(json.dumps({"provider": provider, "error": repr(exc)[:500]}), flush=True)


if __name__ == "__main__":
    main()
