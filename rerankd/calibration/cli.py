"""`rerankd calibrate --model M --data judged.jsonl --output calibration.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from rerankd.evaluation.cli import fail, require

Choice = Literal["auto", "platt", "isotonic"]


def calibrate_command(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model: hub id, directory or builtin.")
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Judged data: rerankd eval JSONL (graded or binary), or a BEIR directory."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write calibration.json.")
    ] = Path("calibration.json"),
    method: Annotated[
        str, typer.Option(help="auto (the lower held-out log-loss), platt or isotonic.")
    ] = "auto",
    holdout: Annotated[
        float, typer.Option(help="Share of queries held out to choose and measure.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the query split.")] = 0,
    bins: Annotated[int, typer.Option(help="ECE bins (10 or more).")] = 15,
    relevant_grade: Annotated[
        int, typer.Option(help="Lowest grade that counts as relevant (graded judgments).")
    ] = 1,
    plot: Annotated[
        Path | None,
        typer.Option(help="Reliability diagram PNG (default: the output's name with .png)."),
    ] = None,
    run: Annotated[
        Path | None, typer.Option(help="TREC run file with the candidates (BEIR layout).")
    ] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split (qrels/SPLIT.tsv).")] = "test",
    top_k: Annotated[
        int, typer.Option(help="Candidates per query from the run or retriever.")
    ] = 100,
    retriever: Annotated[
        str, typer.Option(help="Bi-encoder for candidates when a BEIR set has no run.")
    ] = "builtin",
    backend: Annotated[str, typer.Option(help="torch or onnx.")] = "torch",
    dtype: Annotated[str, typer.Option(help="float32, int8 (onnx), float16 (CUDA).")] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Longest pair in tokens (default: the family's).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N queries.")] = None,
) -> None:
    """Fit a map from the model's raw score to P(relevant) on judged data (Platt or isotonic)."""
    require("calibrate", "sklearn")
    if method not in ("auto", "platt", "isotonic"):
        raise fail(f"--method must be auto, platt or isotonic, not {method!r}")
    if not 0 < holdout < 1:
        raise fail("--holdout must be between 0 and 1")
    if bins < 10:
        raise fail("--bins must be at least 10")
    from rerankd.errors import RerankError
    from rerankd.evaluation.sources import load_eval_set

    try:
        eval_set = load_eval_set(data, run, split, top_k, retriever, device, keep_unjudged=True)
    except (RerankError, ValueError) as exc:
        raise fail(str(exc)) from None
    if limit is not None:
        eval_set.queries = eval_set.queries[: max(limit, 1)]
    try:
        from rerankd.reranker import Reranker

        reranker = Reranker(
            model,
            backend=backend,
            dtype=dtype,
            device=device,
            threads=threads,
            max_length=max_length,
        )
    except (RerankError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    from rerankd.calibration.attach import identity_of
    from rerankd.calibration.data import score_pairs
    from rerankd.calibration.fit import fit
    from rerankd.evaluation.sources import progress_bar

    resolved = reranker.engine.model
    identity = identity_of(resolved)
    with progress_bar() as progress:
        task = progress.add_task(f"scoring with {resolved.name}", total=len(eval_set.queries))
        labeled, provenance = score_pairs(
            eval_set,
            lambda q, docs: reranker.score([(q, d) for d in docs], raw=True),
            reranker.engine.normalize,
            relevant_grade,
            lambda n: progress.advance(task, n),
        )
    methods = ("platt", "isotonic") if method == "auto" else (method,)
    try:
        fitted = fit(
            labeled,
            identity,
            methods=methods,  # type: ignore[arg-type]
            holdout=holdout,
            seed=seed,
            bins=bins,
            provenance={**provenance, "max_length": reranker.engine.max_length},
        )
    except ValueError as exc:
        raise fail(f"{data}: {exc}") from None
    calibration = fitted.calibration
    calibration.save(output)
    _print_summary(calibration.metrics, calibration.method)
    typer.echo(f"wrote {output}", err=True)
    plot_path = plot or output.with_suffix(".png")
    try:
        from rerankd.calibration.plot import reliability_diagram

        held = fitted.held_out
        reliability_diagram(
            [
                ("uncalibrated", held.uncalibrated),
                (calibration.method, calibration.apply(held.raw)),
            ],
            held.labels,
            plot_path,
            f"{resolved.name} on {eval_set.name}: held-out reliability",
            bins,
        )
        typer.echo(f"wrote {plot_path}", err=True)
    except RuntimeError as exc:  # no matplotlib: the calibration itself is written
        typer.echo(f"rerankd: {exc}", err=True)


def _print_summary(metrics: dict[str, object], method: str) -> None:
    from rich.console import Console
    from rich.table import Table

    split = metrics["split"]
    assert isinstance(split, dict)
    table = Table(
        title=f"held out: {split['held_out_queries']} queries, {split['held_out_pairs']} pairs",
        caption=f"served: {method} (the lower held-out log-loss)",
    )
    for column in ("scores", "ECE", "Brier", "log-loss"):
        table.add_column(column, justify="left" if column == "scores" else "right")
    candidates = metrics["candidates"]
    assert isinstance(candidates, dict)
    rows: list[tuple[str, object]] = [("uncalibrated", metrics["before"])]
    rows += [(name, values) for name, values in candidates.items()]
    for name, values in rows:
        assert isinstance(values, dict)
        table.add_row(
            name, f"{values['ece']:.4f}", f"{values['brier']:.4f}", f"{values['log_loss']:.4f}"
        )
    Console(stderr=False).print(table)
