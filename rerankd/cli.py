"""`rerankd serve | rerank | export | models | eval | finetune`, and the registry's commands
(registry/cli.py)."""

from __future__ import annotations

import inspect
import json
import signal
import types
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import ValidationError

from rerankd.config import Settings
from rerankd.registry.cli import add_commands as add_registry_commands

if TYPE_CHECKING:
    from rerankd.ranking import RankedDocument

app = typer.Typer(
    help="rerankd: a reranking server for cross-encoders.",
    no_args_is_help=True,
    add_completion=False,
)


# serve ---------------------------------------------------------------------------------------


def _cli_type(annotation: Any) -> Any:
    """Map a settings field type to one typer understands (Literal -> str, X | None -> X)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _cli_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _cli_type(inner[0])
    if origin is Literal:
        return str
    if origin is list:
        return list[str]
    return annotation


def _serve_signature() -> inspect.Signature:
    """One option per `Settings` field, so `serve --help` always lists every setting."""
    parameters = []
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "RERANKD_" + name.upper()
        help_text = f"{field.description} (env {env})"
        kind = _cli_type(field.annotation)
        option = typer.Option(None, flag, help=help_text, show_default=False, metavar=name.upper())
        if kind is bool:
            option = typer.Option(
                None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False
            )
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return inspect.Signature(parameters)


def serve(**given: Any) -> None:
    """Start the HTTP server. Flags override RERANKD_* environment variables."""
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:  # before ValueError: it is one
        from rerankd.validation import describe_validation_error

        problems = describe_validation_error(exc.errors(), flags=True)
        typer.echo(
            f"rerankd: invalid settings (flags, or RERANKD_* variables): {problems}", err=True
        )
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"rerankd: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None
    from rerankd.server import run

    # main() restores SIGPIPE's default for `rerankd rerank | head`; a server must not die when
    # a client hangs up before its answer is written (EPIPE on that socket is enough).
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    raise typer.Exit(run(settings))


serve.__signature__ = _serve_signature()  # type: ignore[attr-defined]
app.command(help="Start the HTTP server (flags override RERANKD_* environment variables).")(serve)


# rerank / export / models --------------------------------------------------------------------

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local directory, or 'builtin'.")
]
FamilyOption = Annotated[
    str | None,
    typer.Option(help="Model family, when detection cannot tell (`rerankd families`)."),
]
InstructionOption = Annotated[
    str | None, typer.Option(help="Instruction, for models whose family takes one.")
]
BackendOption = Annotated[
    str, typer.Option(help="torch, onnx, or auto (the faster on this CPU, measured once).")
]


@app.command()
def rerank(
    query: Annotated[str, typer.Argument(help="The query.")],
    documents: Annotated[list[str] | None, typer.Argument(help="Documents to rank.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub id, local directory, or 'builtin' (default); with --endpoint, a served "
            "model name (default: the server's first).",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Rank on the rerankd server at this URL instead of loading the model."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RERANKD_API_KEY", help="API key for --endpoint.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help='JSONL: one {"text": ...} or string per line.')
    ] = None,
    top_n: Annotated[int | None, typer.Option(help="Show only the best N.")] = None,
    backend: BackendOption = "torch",
    dtype: Annotated[str, typer.Option(help="float32, or int8 with --backend onnx.")] = "float32",
    max_length: Annotated[
        int | None, typer.Option(help="Longest pair in tokens (default: the family's).")
    ] = None,
    family: FamilyOption = None,
    instruction: InstructionOption = None,
    raw: Annotated[bool, typer.Option(help="Print raw logits.")] = False,
    min_relevance: Annotated[
        float | None, typer.Option(help="Drop documents scored below this (before --top-n).")
    ] = None,
    spans: Annotated[
        bool, typer.Option("--spans", help="Show each document's best spans (found by the model).")
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(help="calibration.json for the local model (a server uses its own)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rank documents for a query and print a table."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    from rerankd.errors import RerankError
    from rerankd.reranker import Reranker
    from rerankd.scripts import script_notice

    texts = list(documents or [])
    if file is not None:
        texts += _read_jsonl(file)
    try:
        if endpoint:
            options: dict[str, Any] = {"min_relevance": min_relevance, "spans": spans}
            if instruction:
                options["instruction"] = instruction
            served, results, warnings = _rerank_remote(
                endpoint, api_key, model, query, texts, top_n, raw, options
            )
        else:
            reranker = Reranker(
                model or "builtin",
                backend=backend,
                dtype=dtype,
                max_length=max_length,
                family=family,
                instruction=instruction,
                calibration=calibration,
            )
            served = reranker.model
            notice = script_notice(served, reranker.engine.model.source, query, texts)
            warnings = (notice,) if notice else ()
            results = reranker.rerank(
                query,
                texts,
                top_n=top_n,
                raw=raw,
                instruction=instruction,
                min_relevance=min_relevance,
                spans=spans,
            )
    except (RerankError, ValueError, httpx.HTTPError) as exc:
        typer.echo(f"rerankd: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in warnings:  # on stderr: `--json | jq` still reads clean JSON
        typer.echo(f"rerankd: warning: {warning}", err=True)
    if as_json:
        typer.echo(
            json.dumps(
                [_as_json(r) for r in results],
                ensure_ascii=False,
            )
        )
        return
    table = Table(title=f"{served}: {query}")
    table.add_column("rank", justify="right")
    table.add_column("index", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document")
    if spans:
        table.add_column("best span")
    for position, result in enumerate(results, start=1):
        text = str(result.document)
        cells = [str(position), str(result.index), f"{result.score:.4f}", _short(text)]
        if spans:
            top = result.spans[0] if result.spans else None
            cells.append(
                f"[{top.start}:{top.end}] {top.score:.4f} {_short(text[top.start : top.end])}"
                if top
                else ""
            )
        table.add_row(*cells)
    Console().print(table)


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _as_json(result: RankedDocument) -> dict[str, Any]:
    out: dict[str, Any] = {"index": result.index, "score": result.score}
    if result.raw is not None:
        out["raw_score"] = result.raw
    if result.spans is not None:
        out["spans"] = [span.as_dict() for span in result.spans]
    out["document"] = result.document
    return out


def _rerank_remote(
    endpoint: str,
    api_key: str | None,
    model: str | None,
    query: str,
    texts: list[str],
    top_n: int | None,
    raw: bool,
    options: dict[str, Any],
) -> tuple[str, list[RankedDocument], tuple[str, ...]]:
    """`rerank --endpoint`: the same ranking from a running server, through `rerankd.Client`."""
    from rerankd.client import Client

    with Client(endpoint, api_key=api_key) as client:
        response = client.rerank(query, texts, model=model, top_n=top_n, raw_scores=raw, **options)
    return response.model, response.results, response.warnings


@app.command()
def export(
    model: ModelOption = "builtin",
    family: FamilyOption = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also build the int8 quantized model.")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="ONNX cache (default ~/.cache/rerankd).")
    ] = None,
    force_int8: Annotated[
        bool, typer.Option("--force-int8", help="Keep int8 even if its accuracy probe fails.")
    ] = False,
) -> None:
    """Build the ONNX cache for a model ahead of a deployment."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from rerankd.engine import EngineOptions
    from rerankd.engine.onnx_backend import ensure_exported
    from rerankd.engine.options import default_cache_dir
    from rerankd.errors import RerankError
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    steps = ["resolving the model", "exporting to ONNX"] + (["quantizing to int8"] if int8 else [])
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=False
    ) as progress:
        task = progress.add_task(steps[0], total=len(steps))
        try:
            resolved = resolve(ModelSpec.parse(model, family=family))
            progress.update(task, advance=1, description=steps[1])
            options = EngineOptions(
                backend="onnx",
                dtype="int8" if int8 else "float32",
                cache_dir=cache_dir or default_cache_dir(),
                force_int8=force_int8,
            )

            def step(message: str) -> None:
                progress.update(task, description=message)
                if message.startswith("quantizing"):
                    progress.advance(task)

            path = ensure_exported(resolved, options, step)
        except (RerankError, ValueError) as exc:
            typer.echo(f"rerankd: {exc}", err=True)
            raise typer.Exit(2) from None
        progress.update(task, completed=len(steps), description="done")
    if int8:
        from rerankd.engine.onnx_backend import cache_entry
        from rerankd.engine.quantize import read_record

        record = read_record(cache_entry(resolved, options))
        if record is not None:
            typer.echo(record.summary(), err=not record.serves_int8)
    typer.echo(str(path))


@app.command()
def families() -> None:
    """List the model families rerankd serves, with the reference each one reproduces."""
    from rerankd.families import FAMILIES

    for name, family in FAMILIES.items():
        instruction = "takes an instruction" if family.takes_instruction else "no instruction"
        # A family's own figure only: a subclass measures its own (or points to the docs).
        deviation = vars(family).get("deviation", "see docs/families.md")
        shared = "" if family.shared_prefix is None else f"; shared prefix: {family.shared_prefix}"
        typer.echo(
            f"{name}: {family.summary} [{instruction}; reference: {family.reference}; "
            f"deviation: {deviation}{shared}]"
        )


@app.command()
def models(
    model: Annotated[list[str] | None, typer.Argument(help="Model specs to resolve.")] = None,
    family: FamilyOption = None,
) -> None:
    """Resolve model specs and print where their files are and their revision."""
    from rerankd.errors import RerankError
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    for spec in model or ["builtin"]:
        try:
            resolved = resolve(ModelSpec.parse(spec, family=family))
        except RerankError as exc:
            typer.echo(f"{spec}: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            json.dumps(
                {
                    "name": resolved.name,
                    "path": str(resolved.path),
                    "revision": resolved.revision,
                    "kind": resolved.family,
                }
            )
        )


add_registry_commands(app)


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, dict):
            item = item.get("text", item.get("document"))
        if not isinstance(item, str):
            typer.echo(
                f"rerankd: {path}:{number}: expected a string or an object with 'text'", err=True
            )
            raise typer.Exit(2)
        texts.append(item)
    return texts


# eval / finetune: their own modules, registered here -------------------------------------------

from rerankd.calibration.cli import calibrate_command  # noqa: E402
from rerankd.evaluation.cli import eval_command  # noqa: E402
from rerankd.finetune.cli import finetune_command  # noqa: E402

app.command("eval")(eval_command)
app.command("calibrate")(calibrate_command)
app.command("finetune")(finetune_command)


def main() -> None:
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


if __name__ == "__main__":
    main()
