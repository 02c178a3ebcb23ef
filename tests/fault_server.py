"""`python -m tests.fault_server serve ...`: the real server with faults injected into its backend.

A document containing `FAULT:RAISE` makes the batch that carries it raise (with an internal
message that must never reach a client); `FAULT:HANG` makes that batch's backend call hang
for RERANKD_TEST_HANG_SECONDS before answering; a query containing `FAULT:CRASH` fails
while planning, an unexpected error outside the backend; a model whose directory name holds
`slowload` takes RERANKD_TEST_LOAD_SECONDS to load (a load stuck on its files). Everything else is the real code path: the
real model, tokenizer, batcher, service and HTTP stack.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rerankd.engine.engine import Engine

RAISE = "FAULT:RAISE"
HANG = "FAULT:HANG"
CRASH = "FAULT:CRASH"  # in the query: an unexpected error outside the backend
_marked: dict[int, str] = {}  # id(sequence) -> fault, for the sequences of marked documents

SLOW_LOAD = "slowload"  # in a model directory's name
_plan = Engine.plan
_run = Engine.run
_warmup = Engine.warmup


def _text(item: object) -> str:
    """A plain string, or a typed document's text (images have none)."""
    return item if isinstance(item, str) else str(getattr(item, "text", "") or "")


def _faulty_plan(self: Engine, query: Any, documents: Any, *args: Any, **kwargs: Any) -> Any:
    documents = list(documents)
    if CRASH in _text(query):
        raise RuntimeError("secret planner internals: /srv/weights")
    plan = _plan(self, query, documents, *args, **kwargs)
    for sequence, owner in zip(plan.sequences, plan.owners, strict=True):
        if owner >= 0:
            for marker in (RAISE, HANG):
                if marker in _text(documents[owner]):
                    _marked[id(sequence)] = marker
    return plan


def _faulty_run(self: Engine, sequences: list[Any]) -> Any:
    faults = {_marked.pop(id(s), None) for s in sequences}
    if RAISE in faults:
        raise RuntimeError("secret internals: /srv/weights/model.bin CUDA error 700")
    if HANG in faults:
        time.sleep(float(os.environ.get("RERANKD_TEST_HANG_SECONDS", "5")))
    return _run(self, sequences)


def _slow_warmup(self: Engine) -> None:
    if SLOW_LOAD in str(self.model.source):
        time.sleep(float(os.environ.get("RERANKD_TEST_LOAD_SECONDS", "5")))
    _warmup(self)


if __name__ == "__main__":
    # Only the server process this module runs as is faulty: tests that import its markers
    # keep the real engine.
    Engine.plan = _faulty_plan  # type: ignore[method-assign]
    Engine.run = _faulty_run  # type: ignore[method-assign]
    Engine.warmup = _slow_warmup  # type: ignore[method-assign]

    from rerankd.cli import main

    main()
