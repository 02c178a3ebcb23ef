"""int8 tuned to the CPU it runs on, and checked against fp32 before it is used.

- **Scheme per instruction set.** With AVX-512 VNNI, AVX-VNNI, AMX or an Arm dot-product
  unit, ONNX Runtime's int8 GEMM multiplies u8 activations by s8 weights in one instruction
  (`vpdpbusd`), so weights are s8. Without them (AVX2, plain AVX-512), u8 x s8 products are
  summed in saturating 16-bit lanes (`vpmaddubsw`) and lose accuracy, so weights are u8
  (u8 x u8 kernels widen to 32 bits). Weights are quantized per output channel; activations
  dynamically, per tensor, at run time.
- **Sensitive parts stay fp32.** A per-layer sensitivity check runs the fp32 model on the
  probe set once, simulates each matrix product's int8 error on its real inputs, and the
  products with the largest relative error are kept in fp32, a few at a time, until the
  probe passes (at most a third of them). The scoring head always stays fp32.
- **An accuracy probe** (`quantize_probe.probe_set()`: ~500 pairs shaped like real traffic,
  graded relevance, near-duplicates, ties, long and short, six languages) scores with fp32 and int8:
  below Spearman `MIN_SPEARMAN` or above `MAX_DEVIATION` (largest difference of normalized
  scores) int8 is refused loudly and fp32 is served, unless forced.
- **The CPU is part of the cache key.** The int8 file is named for the instruction set it
  was tuned for, next to a JSON record (scheme, CPU flags, probe figures, fp32 layers); a
  cache copied to a CPU of another class is re-tuned there, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from rerankd.engine.backend import Backend, Batch
from rerankd.engine.cpu import cpu_flags
from rerankd.engine.options import EngineOptions, default_batch_tokens
from rerankd.engine.plan import LongDocPolicy
from rerankd.engine.quantize_probe import Group, probe_set
from rerankd.models import ResolvedModel

if TYPE_CHECKING:
    import onnx

    from rerankd.families import ModelFamily

logger = logging.getLogger(__name__)

MIN_SPEARMAN = 0.98
MAX_DEVIATION = 0.05  # of normalized scores (sigmoid, or (cosine + 1) / 2), in [0, 1]
MAX_KEPT_SHARE = 1 / 3  # at most this share of the quantizable products stays fp32
QUANTIZED_OPS = ("MatMul", "Attention")
PROBE_BATCH = default_batch_tokens("cpu", "onnx", "int8")  # padded tokens per probe batch
_ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimddp",
    "i8mm",
)
Progress = Callable[[str], None]


# The CPU and the scheme -------------------------------------------------------------------


def isa_class(flags: frozenset[str]) -> str:
    """The instruction-set class int8 is tuned for; one int8 file per class."""
    for name, flag in (
        ("amx", "amx_int8"),
        ("avx512vnni", "avx512_vnni"),
        ("avxvnni", "avx_vnni"),
        ("avx512", "avx512bw"),
        ("avx2", "avx2"),
        ("armdot", "asimddp"),
    ):
        if flag in flags:
            return name
    return "generic"


@dataclass(frozen=True)
class Scheme:
    isa: str
    weights: Literal["s8", "u8"]
    why: str


def scheme_for(isa: str) -> Scheme:
    if isa in ("amx", "avx512vnni", "avxvnni", "armdot"):
        return Scheme(isa, "s8", "u8 x s8 dot products in one instruction (VNNI/AMX/dot)")
    return Scheme(isa, "u8", "no VNNI: u8 x s8 would saturate 16-bit sums; u8 x u8 does not")


# The record next to the int8 file ---------------------------------------------------------


@dataclass
class Int8Record:
    """What was decided at export, and why: written as JSON, shown by export and /info."""

    isa: str
    weights: str
    accepted: bool
    forced: bool
    spearman: float
    max_deviation: float
    probe_pairs: int
    quantized: int  # matrix products run in int8
    kept_fp32: list[str]  # the most sensitive ones, left in fp32
    cpu_flags: list[str]
    onnxruntime: str
    seconds: float
    tried: list[dict[str, float | int]] = field(default_factory=list)
    smoothed: int = 0  # products whose activation outliers were moved into the weights

    @property
    def serves_int8(self) -> bool:
        return self.accepted or self.forced

    def summary(self) -> str:
        verdict = (
            "int8 accepted"
            if self.accepted
            else ("int8 FORCED despite the probe" if self.forced else "int8 REFUSED, fp32 kept")
        )
        return (
            f"{verdict}: {self.weights} weights per channel for {self.isa}; probe Spearman "
            f"{self.spearman:.4f} (min {MIN_SPEARMAN}), max deviation {self.max_deviation:.4f} "
            f"(max {MAX_DEVIATION}) over {self.probe_pairs} pairs; {len(self.kept_fp32)} of "
            f"{self.quantized + len(self.kept_fp32)} matrix products kept in fp32"
        )


def int8_file(entry: Path, isa: str | None = None) -> Path:
    return entry / f"model.int8-{isa or isa_class(cpu_flags())}.onnx"


def record_file(entry: Path, isa: str | None = None) -> Path:
    return int8_file(entry, isa).with_suffix(".json")


def read_record(entry: Path, isa: str | None = None) -> Int8Record | None:
    path = record_file(entry, isa)
    try:
        return Int8Record(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def cached_path(entry: Path, options: EngineOptions) -> Path:
    """The file to serve for int8 on this CPU: the int8 file, or fp32 when the probe refused it.

    The path may not exist yet: then `quantize_checked` builds it.
    """
    record = read_record(entry)
    if record is not None and not record.accepted and not options.force_int8:
        return entry / "model.onnx"
    return int8_file(entry)


def describe(entry: Path) -> dict[str, object] | None:
    """The record for /info, or None when int8 was not built on this CPU class."""
    record = read_record(entry)
    if record is None:
        return None
    info: dict[str, object] = asdict(record)
    info["serving"] = "int8" if record.serves_int8 else "float32"
    info.pop("tried")
    return info


# Quantize, probe, keep the sensitive parts in fp32 ------------------------------------------


def quantize_checked(
    model: ResolvedModel,
    options: EngineOptions,
    fp32: Path,
    int8: Path,
    progress: Progress | None = None,
    *,
    min_spearman: float = MIN_SPEARMAN,
    max_deviation: float = MAX_DEVIATION,
) -> Path:
    """Build `int8` from `fp32` for this CPU; returns the file to serve (fp32 if refused)."""
    step = progress or (lambda message: None)
    started = time.perf_counter()
    flags = cpu_flags()
    scheme = scheme_for(isa_class(flags))
    _warn_if_tuned_elsewhere(fp32.parent, scheme.isa)
    step(f"quantizing to int8 ({scheme.weights} weights for {scheme.isa})")
    reference_backend = SessionBackend(fp32, options.thread_count)
    reference = probe_scores(model, options, reference_backend)
    plans = plan_products(fp32, reference_backend.feeds, scheme.weights)
    ranking = [(plan.name, plan.error) for plan in plans]
    head = _head_nodes(fp32)
    limit = int(len(ranking) * MAX_KEPT_SHARE)
    counts = sorted({0, 1, 2, 4, 8, 16, 32, limit} & set(range(limit + 1)))
    tried: list[dict[str, float | int]] = []
    best: tuple[float, Path, int, float] | None = None
    with tempfile.TemporaryDirectory(dir=int8.parent) as tmp:
        smoothed = Path(tmp) / "smoothed.onnx"
        smoothed_count = smooth(fp32, smoothed, plans)
        for count in counts:
            step(f"int8 probe with {count} sensitive products in fp32")
            candidate = Path(tmp) / f"candidate-{count}.onnx"
            kept = [name for name, _ in ranking[:count]]
            _quantize(smoothed, candidate, scheme, head + kept)
            scores = probe_scores(model, options, SessionBackend(candidate, options.thread_count))
            rho = spearman(scores, reference)
            deviation = float(np.max(np.abs(scores - reference)))
            tried.append({"kept_fp32": count, "spearman": rho, "max_deviation": deviation})
            if best is None or rho > best[0]:
                best = (rho, candidate, count, deviation)
            if rho >= min_spearman and deviation <= max_deviation:
                break
        assert best is not None
        rho, candidate, count, deviation = best
        accepted = rho >= min_spearman and deviation <= max_deviation
        record = Int8Record(
            isa=scheme.isa,
            weights=scheme.weights,
            accepted=accepted,
            forced=options.force_int8 and not accepted,
            spearman=round(rho, 5),
            max_deviation=round(deviation, 5),
            probe_pairs=len(reference),
            quantized=len(ranking) - count,
            kept_fp32=[name for name, _ in ranking[:count]],
            smoothed=smoothed_count,
            cpu_flags=sorted(flags & set(_ISA_FLAGS)),
            onnxruntime=_ort_version(),
            seconds=round(time.perf_counter() - started, 1),
            tried=tried,
        )
        if record.serves_int8:
            os.replace(candidate, int8)
    record_file(int8.parent, scheme.isa).write_text(
        json.dumps(asdict(record), indent=2), encoding="utf-8"
    )
    if not accepted:
        logger.warning(
            "%s. The int8 model of %s ranks differently from fp32 on the probe set; %s",
            record.summary(),
            model.name,
            "serving it because it was forced"
            if record.forced
            else "serving float32 instead (use --force-int8 to serve int8 anyway)",
        )
    else:
        logger.info("%s", record.summary())
    step(record.summary())
    return int8 if record.serves_int8 else fp32


def _warn_if_tuned_elsewhere(entry: Path, isa: str) -> None:
    others = [p.name for p in entry.glob("model.int8-*.json") if p.name != f"model.int8-{isa}.json"]
    if others:
        logger.warning(
            "this ONNX cache holds int8 tuned for another CPU class (%s); this CPU is %s: "
            "re-tuning int8 for it",
            ", ".join(sorted(others)),
            isa,
        )


def _quantize(fp32: Path, out: Path, scheme: Scheme, exclude: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(out),
        weight_type=QuantType.QInt8 if scheme.weights == "s8" else QuantType.QUInt8,
        per_channel=True,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=exclude,
        extra_options={
            # Fused nodes (com.microsoft domain) defeat shape inference; their tensors are float.
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "MatMulConstBOnly": True,  # only products with a weight; never activation x activation
        },
        # A model whose fp32 weights needed a side file may still pass 2 GiB in int8 (4B+).
        use_external_data_format=any(fp32.parent.glob("*.onnx.data")),
    )


def _head_nodes(fp32: Path) -> list[str]:
    """The scoring head's products: a sliver of the time, and they set the score's scale.

    The quantizer rewrites a Gemm as MatMul + Add named `<gemm>_MatMul` before it applies
    the exclusions, so both names are listed (with only the Gemm's, the head was quantized).
    """
    import onnx

    names = [
        node.name
        for node in onnx.load(str(fp32), load_external_data=False).graph.node
        if node.op_type in ("MatMul", "Gemm")
        # A top-level product ("/MatMul") is the family head's own: TokenLogitHead's answer rows.
        and ("classifier" in node.name or "pooler" in node.name or node.name.count("/") == 1)
    ]
    return names + [f"{name}_MatMul" for name in names]


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


# The probe --------------------------------------------------------------------------------


class SessionBackend:
    """An ONNX Runtime session as a `Backend`, remembering its feeds for the sensitivity check."""

    description = "onnxruntime (int8 probe)"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path), session_options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, batch: Batch) -> np.ndarray:
        feed = batch.inputs(list(self._inputs))  # as OnnxBackend feeds
        self.feeds.append(feed)
        return np.asarray(self.session.run(None, feed)[0])

    def close(self) -> None:
        self.feeds.clear()


def probe_scores(
    model: ResolvedModel,
    options: EngineOptions,
    backend: Backend,
    groups: tuple[Group, ...] | None = None,
) -> np.ndarray:
    """Normalized scores of every probe pair, through the engine's own planning and padding."""
    from rerankd.families import bind_family  # not through the engine, which imports us

    return score_groups(bind_family(model, options), backend.run, groups)


def score_groups(
    family: ModelFamily,
    run: Callable[[Batch], np.ndarray],
    groups: tuple[Group, ...] | None = None,
    max_batch_tokens: int = PROBE_BATCH,
) -> np.ndarray:
    """Normalized scores of every pair of `groups` (default: the probe set), batched as served.

    Dynamic int8 takes one activation range per batch, so what shares a batch changes the
    scores: the probe cuts batches at the budget ONNX Runtime serves with on a CPU.
    """
    from rerankd.batching import run_sorted
    from rerankd.documents import TextDocument

    instruction = family.instruction_for(None)
    scores: list[np.ndarray] = []
    for query, passages in probe_set() if groups is None else groups:
        plan = family.plan_documents(
            TextDocument(query), [TextDocument(p) for p in passages], LongDocPolicy(), instruction
        )
        outputs = run_sorted(lambda items: family.run(run, items), plan.sequences, max_batch_tokens)
        scores.append(family.normalize(plan.combine(outputs)))
    # Rounded: two copies of a passage, padded in different batches, differ in the 8th digit;
    # rounding lets fp32 tie them, as the probe's duplicates mean to.
    return np.round(np.concatenate(scores).astype(np.float64), 6)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation, tied scores sharing their mean rank.

    The probe holds exact duplicates: fp32 ties them, and breaking ties by position would
    count an int8 difference in the last bit between two copies as a swapped pair.
    """
    ranks_a, ranks_b = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return np.asarray(sums[inverse] / counts[inverse])


# Per-layer sensitivity and smoothing -------------------------------------------------------

SMOOTHING = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)  # migration strengths tried per product (0: none)
SAMPLE_ROWS = 1024  # activation rows per product the simulation uses
SMOOTH_MIN_GAIN = 1.5  # smoothing that needs a Mul must cut the simulated error by this factor


@dataclass
class ProductPlan:
    """One quantizable product: its simulated int8 error, and the smoothing that minimises it."""

    name: str
    activation: str
    weight: str
    error: float
    alpha: float
    scale: np.ndarray | None = None  # per input channel: x / scale, scale * W; None: as is


def plan_products(
    fp32: Path, feeds: list[dict[str, np.ndarray]], weights: Literal["s8", "u8"]
) -> list[ProductPlan]:
    """Each quantizable product's int8 error on its real inputs, with its best smoothing.

    The error is ||Q(x') Q(W') - x W|| / ||x W||, x quantized as ONNX Runtime does at run
    time (u8, per tensor) and W per output channel in the scheme's weight type. Smoothing
    (SmoothQuant's migration) divides activation channel j by s_j = max|x_j|^a / max|W_j|^(1-a)
    and multiplies weight row j by it: the same product in fp32, but the outlier channels
    that set a per-tensor u8 scale (and round every other channel to a few levels) shrink.
    """
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(fp32))
    graph = graph_model.graph
    initializers = {init.name: init for init in graph.initializer}
    products = [
        (node.name, node.input[0], node.input[1])
        for node in graph.node
        if node.op_type in QUANTIZED_OPS and len(node.input) > 1 and node.input[1] in initializers
    ]
    weight_values = {name: numpy_helper.to_array(initializers[w]) for name, _, w in products}
    producers = {output: node.op_type for node in graph.node for output in node.output}
    captured = _capture(graph_model, {activation for _, activation, _ in products}, feeds)
    plans = []
    for name, activation, weight in products:
        w = weight_values[name].astype(np.float32)
        if activation not in captured or w.ndim != 2:
            continue
        x = np.concatenate(captured[activation]).astype(np.float32)
        x = x[:: max(1, len(x) // SAMPLE_ROWS)]  # an even sample: the simulation is numpy GEMMs
        if x.shape[1] != w.shape[0]:
            continue
        exact = x @ w
        norm = float(np.linalg.norm(exact)) or 1.0
        best: ProductPlan | None = None
        plain: ProductPlan | None = None
        for alpha in SMOOTHING:
            scale = _smoothing_scale(x, w, alpha) if alpha else None
            xs, ws = (x, w) if scale is None else (x / scale, w * scale[:, None])
            error = float(
                np.linalg.norm(_fake_activations(xs) @ _fake_weights(ws, weights) - exact)
            )
            candidate = ProductPlan(name, activation, weight, error / norm, alpha, scale)
            if not alpha:
                plain = candidate
            if best is None or candidate.error < best.error:
                best = candidate
        assert best is not None and plain is not None
        folds = producers.get(activation, "") == "Attention"
        if best.alpha and not folds and plain.error < SMOOTH_MIN_GAIN * best.error:
            best = plain  # a Mul costs a pass over the activations: only where it pays
        plans.append(best)
    return sorted(plans, key=lambda plan: -plan.error)


def sensitivity(
    fp32: Path, feeds: list[dict[str, np.ndarray]], weights: Literal["s8", "u8"]
) -> list[tuple[str, float]]:
    """(product, simulated int8 error with its best smoothing), worst first."""
    return [(plan.name, plan.error) for plan in plan_products(fp32, feeds, weights)]


def smooth(fp32: Path, out: Path, plans: list[ProductPlan]) -> int:
    """Write `fp32` with each planned smoothing applied (the same function); returns how many."""
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(fp32))
    graph = graph_model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = {node.name: node for node in graph.node}
    producers = {output: node for node in graph.node for output in node.output}
    done = 0
    for plan in plans:
        node = nodes.get(plan.name)
        if plan.scale is None or node is None:
            continue
        _scale_initializer(initializers[plan.weight], rows=plan.scale)
        producer = producers.get(node.input[0])
        if _fold_into_attention(producer, initializers, plan.scale):
            done += 1  # the attention's value projection now yields x / scale: no Mul needed
            continue
        divisor = f"{plan.name}/smooth_scale"
        smoothed = f"{plan.name}/smoothed_input"
        graph.initializer.append(
            numpy_helper.from_array((1.0 / plan.scale).astype(np.float32), divisor)
        )
        position = list(graph.node).index(node)
        graph.node.insert(
            position,
            onnx.helper.make_node(
                "Mul", [node.input[0], divisor], [smoothed], name=f"{plan.name}/smooth"
            ),
        )
        node.input[0] = smoothed
        done += 1
    onnx.save(graph_model, str(out))
    return done


def _scale_initializer(
    init: onnx.TensorProto, rows: np.ndarray | None = None, columns: np.ndarray | None = None
) -> None:
    """Multiply an initializer's rows (or a bias's / a matrix's columns) in place."""
    from onnx import numpy_helper

    value = numpy_helper.to_array(init).astype(np.float32)
    if rows is not None:
        value = value * rows[:, None]
    if columns is not None:
        value = value * columns
    init.CopyFrom(numpy_helper.from_array(value, init.name))


def _fold_into_attention(
    producer: onnx.NodeProto | None, initializers: dict[str, onnx.TensorProto], scale: np.ndarray
) -> bool:
    """Divide an Attention node's value projection by `scale`, if it feeds the product alone.

    Attention's output is softmax(QK^T) V: linear in V, channel for channel, so scaling V's
    weight columns and bias divides the output's channels, and no Mul runs at all.
    """
    if producer is None or producer.op_type != "Attention":
        return False
    inputs = list(producer.input)
    if len(inputs) < 3 or inputs[1] not in initializers or inputs[2] not in initializers:
        return False
    hidden = scale.shape[0]
    weight, bias = initializers[inputs[1]], initializers[inputs[2]]
    if list(weight.dims)[-1] != 3 * hidden or list(bias.dims) != [3 * hidden]:
        return False
    columns = np.concatenate([np.ones(2 * hidden, np.float32), 1.0 / scale]).astype(np.float32)
    _scale_initializer(weight, columns=columns)
    _scale_initializer(bias, columns=columns)
    return True


def _smoothing_scale(x: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    x_max = np.maximum(np.abs(x).max(axis=0), 1e-5)
    w_max = np.maximum(np.abs(w).max(axis=1), 1e-5)
    return np.asarray((x_max**alpha / w_max ** (1 - alpha)).astype(np.float32))


def _capture(
    graph_model: onnx.ModelProto, names: set[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, list[np.ndarray]]:
    """The values of the tensors `names` on `feeds`, as [rows, channels] blocks."""
    import copy

    import onnx
    import onnxruntime as ort

    probe_model = copy.deepcopy(graph_model)
    graph = probe_model.graph
    outputs = {o.name for o in graph.output}
    for name in sorted(names - outputs):
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    captured: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(probe_model, str(probe), save_as_external_data=True, location="probe.data")
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        labels = [o.name for o in session.get_outputs()]
        for feed in feeds:
            for name, value in zip(labels, session.run(None, feed), strict=True):
                if name in names and value.ndim >= 2:
                    captured.setdefault(name, []).append(value.reshape(-1, value.shape[-1]))
    return captured


def _fake_activations(x: np.ndarray) -> np.ndarray:
    """Dynamic u8 per tensor, zero exactly representable (as DynamicQuantizeLinear)."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.round(-low / scale)
    return np.asarray((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale)


def _fake_weights(w: np.ndarray, kind: Literal["s8", "u8"]) -> np.ndarray:
    """Per output channel (column): symmetric s8, or asymmetric u8."""
    if kind == "s8":
        scale = np.abs(w).max(axis=0) / 127
        scale[scale == 0] = 1.0
        return np.asarray(np.clip(np.round(w / scale), -127, 127) * scale)
    low, high = np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)
    scale = (high - low) / 255
    scale[scale == 0] = 1.0
    zero = np.round(-low / scale)
    return np.asarray((np.clip(np.round(w / scale) + zero, 0, 255) - zero) * scale)
