"""Where an ONNX Runtime forward pass spends its time, by operator type.

Runs rerankd's cached ONNX export (fp32 or int8) of a benchmark model on one request's
length-sorted batches with ONNX Runtime's profiler on, and prints the share of kernel time
per operator type, so a missed speed target can be pinned on a kernel (GEMM, attention,
quantization of activations, layer norm) rather than guessed.

    python -m bench.profile_onnx --model minilm-l6 --dtype int8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import fixtures
from bench.workload import make_requests

THREADS = 2


def onnx_file(model_dir: Path, dtype: str) -> Path:
    """The export rerankd made (and cached) for this model directory, making it if needed."""
    from rerankd.engine import EngineOptions
    from rerankd.engine.onnx_backend import ensure_exported
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    options = EngineOptions(
        backend="onnx", dtype=dtype, threads=THREADS, cache_dir=fixtures.WORK / "cache" / "rerankd"
    )
    return ensure_exported(resolve(ModelSpec.parse(str(model_dir))), options)


def batches(model: str, max_batch_tokens: int) -> list[dict]:
    """One request's pairs as rerankd would batch them: sorted by length, token budget."""
    import numpy as np

    from rerankd.batching import cut_batches
    from rerankd.engine import EngineOptions, LongDocPolicy, PaddedBatch
    from rerankd.families import bind_family, resolve
    from rerankd.models import ModelSpec

    model_dir = fixtures.model_dir(model)
    family = bind_family(resolve(ModelSpec(str(model_dir))), EngineOptions(max_length=512))
    tokenizer = family.tokenizer
    request = make_requests(1)[0]
    sequences = sorted(
        family.plan(request.query, request.documents, LongDocPolicy(), None).sequences, key=len
    )
    feeds = []
    for cut in cut_batches([len(s) for s in sequences], max_batch_tokens, 256):
        padded = PaddedBatch.pad([sequences[i] for i in cut], tokenizer.pad_id)
        feeds.append(
            {
                "input_ids": padded.input_ids,
                "attention_mask": padded.attention_mask,
                "token_type_ids": np.asarray(padded.token_type_ids),
            }
        )
    return feeds


def profile(path: Path, feeds: list[dict], repeats: int) -> tuple[dict[str, float], float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    for feed in feeds[:1]:
        session.run(None, feed)  # warm-up, also profiled: dropped below by count
    started = time.perf_counter()
    for _ in range(repeats):
        for feed in feeds:
            session.run(None, feed)
    wall = (time.perf_counter() - started) / repeats
    trace = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1e6
    return by_op, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", choices=sorted(fixtures.RECIPES))
    parser.add_argument("--dtype", default="int8", choices=["float32", "int8"])
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = onnx_file(fixtures.model_dir(args.model), args.dtype)
    feeds = batches(args.model, args.max_batch_tokens)
    by_op, wall = profile(path, feeds, args.repeats)
    total = sum(by_op.values())
    print(f"{path.name}: {len(feeds)} batches, {wall:.2f} s per request (wall)")
    for op, seconds in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"  {op:<28} {100 * seconds / total:5.1f}%  {seconds:7.2f} s")


if __name__ == "__main__":
    main()
