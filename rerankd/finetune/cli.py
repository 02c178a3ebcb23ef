"""`rerankd finetune --model BASE --data TRAIN --output DIR [--eval DATA] [--epochs N]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rerankd.evaluation.data import EvalSet
    from rerankd.finetune.data import TrainSet
    from rerankd.finetune.train import TrainOptions

from rerankd.evaluation.cli import fail, require

if TYPE_CHECKING:
    from rerankd.evaluation.data import EvalSet
    from rerankd.finetune.data import TrainSet
    from rerankd.finetune.train import TrainOptions


def finetune_command(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: hub id, directory or builtin.")
    ],
    data: Annotated[
        Path,
        typer.Option(help="Training data: JSONL (triples or the eval shape) or a BEIR directory."),
    ],
    output: Annotated[Path, typer.Option(help="Directory to write the fine-tuned model into.")],
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Evaluation data, as for `rerankd eval`.")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training data.")] = 1.0,
    loss: Annotated[
        str, typer.Option(help="listnet (listwise) or bce (binary cross-entropy).")
    ] = "listnet",
    batch_size: Annotated[
        int, typer.Option(help="Queries per step (listnet) or pairs per step (bce).")
    ] = 8,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-5,
    negatives: Annotated[
        int, typer.Option(help="Negatives per query; missing ones are mined.")
    ] = 7,
    miner: Annotated[str, typer.Option(help="Bi-encoder that mines hard negatives.")] = "builtin",
    split: Annotated[str, typer.Option(help="BEIR qrels split to train on.")] = "train",
    eval_split: Annotated[str, typer.Option(help="BEIR qrels split to evaluate on.")] = "test",
    run: Annotated[
        Path | None, typer.Option(help="TREC run with the evaluation candidates (BEIR).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="Longest (query, passage) pair in tokens.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    precision: Annotated[str, typer.Option(help="auto, fp32, or fp16/bf16 on CUDA.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (data order, initialisation).")] = 12,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: all cores).")
    ] = None,
    save_steps: Annotated[
        int, typer.Option(help="Checkpoint every N steps (in DIR/checkpoints).")
    ] = 500,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (default: each epoch).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint in DIR/checkpoints.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty DIR.")] = False,
) -> None:
    """Fine-tune a cross-encoder on your data; the result is served by `rerankd serve --model DIR`."""
    require("train", "sentence_transformers", "datasets", "accelerate", "torch", "ir_measures")
    from rerankd.errors import RerankError
    from rerankd.evaluation.sources import load_eval_set
    from rerankd.finetune.data import read_train_set
    from rerankd.finetune.train import TrainOptions

    try:
        options = TrainOptions(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            loss=loss,
            max_length=max_length,
            seed=seed,
            device=device,
            precision=precision,
            save_steps=save_steps,
            eval_steps=eval_steps,
            resume=resume,
            threads=threads,
        )
        if negatives < 1:
            raise ValueError("--negatives must be at least 1")
        _check_output(output, resume, overwrite)
        train = read_train_set(data, split)
        eval_set = (
            load_eval_set(eval_data, run, eval_split, 100, miner, device) if eval_data else None
        )
        from rerankd.families import resolve
        from rerankd.models import ModelSpec

        base = resolve(ModelSpec.parse(model))
    except (RerankError, ValueError) as exc:
        raise fail(str(exc)) from None
    _train(model, base.path, train, output, options, eval_set, data, eval_data, negatives, miner)


def _check_output(output: Path, resume: bool, overwrite: bool) -> None:
    checkpoints = output / "checkpoints"
    if resume:
        if not any(checkpoints.glob("checkpoint-*")):
            raise ValueError(f"{checkpoints}: no checkpoint to resume from")
    elif output.exists() and any(output.iterdir()) and not overwrite:
        raise ValueError(f"{output} is not empty; pass --overwrite, or --resume to continue")


def _train(
    model: str,
    base: Path,
    train: TrainSet,
    output: Path,
    options: TrainOptions,
    eval_set: EvalSet | None,
    data: Path,
    eval_data: Path | None,
    negatives: int,
    miner: str,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from rerankd.evaluation.sources import progress_bar
    from rerankd.finetune.card import write_card
    from rerankd.finetune.mining import fill_random_negatives, mine_hard_negatives, needs_mining
    from rerankd.finetune.train import finetune

    console = Console(stderr=True)
    mined = 0
    if needs_mining(train, negatives):
        with progress_bar() as progress:
            task = progress.add_task(
                f"mining negatives with {miner}", total=len(train.corpus) + len(train.queries)
            )
            mined = mine_hard_negatives(
                train, negatives, miner, options.device, advance=lambda n: progress.advance(task, n)
            )
        mined += fill_random_negatives(train, negatives, options.seed)
    result = finetune(base, train, output, options, eval_set)
    write_card(
        result,
        base=model,
        train=train,
        data_path=data,
        eval_path=eval_data,
        options=options,
        mined=mined,
    )
    table = Table(title=f"{output}: {result.steps} steps, {result.steps_per_second:.2f} steps/s")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, value in result.after.items():
        table.add_row(name, f"{result.before[name]:.4f}", f"{value:.4f}")
    console.print(table)
    typer.echo(str(output))
