"""`rerankd eval DATA --model M [--model M2 ...] [--run RUN] [--json OUT]`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rerankd.evaluation.data import EvalSet
from rerankd.evaluation.metrics import DEFAULT_METRICS, check_metric
from rerankd.evaluation.scorers import Mode, ModelRun, plan_runs
from rerankd.evaluation.sources import load_eval_set, progress_bar

if TYPE_CHECKING:
    from rerankd.evaluation.runner import Report


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"rerankd: {message}", err=True)
    return typer.Exit(code)


def eval_command(
    data: Annotated[Path, typer.Argument(help="rerankd JSONL file, or a BEIR directory.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model (hub id, directory, builtin) or server URL (http://host:port[#name]); repeat to compare.",
        ),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="Mode to run each local model in: torch, onnx, onnx:int8, torch:float16 (CUDA); repeat to compare."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Backend when no --mode is given: torch or onnx.")
    ] = "torch",
    dtype: Annotated[
        str, typer.Option(help="dtype when no --mode is given: float32, int8 (onnx).")
    ] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads per model (default: all cores).")
    ] = None,
    run: Annotated[
        Path | None, typer.Option(help="TREC run file with the candidates (BEIR layout).")
    ] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split (qrels/SPLIT.tsv).")] = "test",
    top_k: Annotated[
        int, typer.Option(help="Candidates per query from the run or the retriever.")
    ] = 100,
    retriever: Annotated[
        str, typer.Option(help="Bi-encoder for candidates when a BEIR set has no run.")
    ] = "builtin",
    metric: Annotated[
        list[str] | None, typer.Option(help="ndcg@K, mrr@K, map, recall@K, precision@K; repeat.")
    ] = None,
    max_length: Annotated[
        int, typer.Option(help="Longest (query, document) pair in tokens.")
    ] = 512,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N queries.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Write one PNG per metric into this directory, and reliability.png: each "
            "model's score against the observed share of relevant pairs."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RERANKD_API_KEY", help="API key for server URLs.")
    ] = None,
) -> None:
    """Measure how much rerankers improve a retriever's ranking (NDCG, MRR, MAP, recall)."""
    require("eval", "ir_measures", "pytrec_eval", "scipy")
    try:
        metrics = [check_metric(m) for m in (metric or DEFAULT_METRICS)]
        modes = [Mode.parse(m) for m in mode] if mode else [Mode(backend, dtype)]
        runs = plan_runs(model or ["builtin"], modes)
        from rerankd.engine.options import EngineOptions

        for checked in modes:  # a mode this device refuses fails now, not after a model load
            EngineOptions(backend=checked.backend, dtype=checked.dtype, device=device)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(str(exc)) from None
    if top_k < 1:
        raise fail("--top-k must be at least 1")
    if plots is not None:
        _require_matplotlib()
    from rerankd.errors import RerankError

    try:  # DataError is a ValueError; a retriever that cannot load is a RerankError
        eval_set = load_eval_set(data, run, split, top_k, retriever, device)
    except (RerankError, ValueError) as exc:
        raise fail(str(exc)) from None
    if limit is not None:
        eval_set.queries = eval_set.queries[: max(limit, 1)]
        eval_set.qrels = {q.id: eval_set.qrels[q.id] for q in eval_set.queries}
    report = evaluate(eval_set, runs, metrics, device, max_length, api_key, threads)
    from rerankd.evaluation.report import print_report, write_json, write_plots

    print_report(report)
    if json_out is not None:
        write_json(report, json_out)
        typer.echo(f"wrote {json_out}", err=True)
    if plots is not None:
        for path in write_plots(report, plots):
            typer.echo(f"wrote {path}", err=True)


def evaluate(
    eval_set: EvalSet,
    runs: list[ModelRun],
    metrics: list[str],
    device: str,
    max_length: int,
    api_key: str | None,
    threads: int | None = None,
) -> Report:
    """The baseline row, then each model loaded, scored and released in turn."""
    from rerankd.evaluation.runner import (
        Report,
        agreements,
        baseline,
        relevance_labels,
        score_all,
    )
    from rerankd.evaluation.scorers import LocalScorer, RemoteScorer, Scorer

    results = [baseline(eval_set, metrics)]
    with progress_bar() as progress:
        for item in runs:
            task = progress.add_task(item.label, total=len(eval_set.queries))

            def build(item: ModelRun = item) -> Scorer:
                if item.is_remote:
                    return RemoteScorer(item, api_key)
                return LocalScorer(item, device, max_length, threads)

            def advance(n: int, task: Any = task) -> None:
                progress.advance(task, n)

            scorer: Scorer = _load(build)
            try:
                results.append(score_all(eval_set, scorer, metrics, advance))
            except Exception as exc:  # noqa: BLE001 - a server or backend failure ends the run cleanly
                raise fail(f"{item.label}: {exc}", 1) from None
            finally:
                scorer.close()
    return Report(
        eval_set.name,
        metrics,
        len(eval_set.queries),
        eval_set.pairs,
        results,
        agreements(results),
        eval_set.notes,
        relevance_labels(eval_set),
    )


def _load(factory: Callable[[], Any]) -> Any:
    """Build a scorer; a model that cannot load is a clear message and exit code 2."""
    from rerankd.errors import RerankError

    try:
        return factory()
    except (RerankError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def require(extra: str, *modules: str) -> None:
    """Exit 2 with the install line when an optional extra is missing, before anything runs."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(f"this command needs {', '.join(missing)}: pip install 'rerankd[{extra}]'")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise fail("--plots needs matplotlib: pip install 'rerankd[eval]'") from None
