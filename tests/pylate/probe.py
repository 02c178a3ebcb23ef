"""PyLate's own scoring, run in PyLate's venv (`.venv-pylate`) by tests/test_colbert.py.

Reads {"model": dir, "cases": [{"query": ..., "documents": [...]}]} on stdin; writes one list
of MaxSim scores per case: `ColBERT.encode` (queries and documents) then PyLate's
`colbert_scores` on each (query, document) pair.
"""

import json
import sys

import torch
from pylate import models
from pylate.scores import colbert_scores


def main() -> None:
    request = json.load(sys.stdin)
    model = models.ColBERT(request["model"], device="cpu")
    answers = []
    for case in request["cases"]:
        query = model.encode([case["query"]], is_query=True)[0]
        documents = model.encode(case["documents"], is_query=False, batch_size=4)
        scores = [
            float(colbert_scores(torch.from_numpy(query)[None], torch.from_numpy(d)[None])[0, 0])
            for d in documents
        ]
        answers.append(scores)
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
