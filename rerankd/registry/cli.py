"""`rerankd register | launch | list | terminate | unregister`: the registry from a shell.

Each talks to a running server (`--endpoint`, or RERANKD_ENDPOINT) with the admin key from
RERANKD_ADMIN_KEY (RERANKD_API_KEY is tried for reading); `--json` prints the server's JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rerankd.registry.remote import DEFAULT_ENDPOINT, RegistryClient, RemoteError

Endpoint = Annotated[
    str,
    typer.Option(envvar="RERANKD_ENDPOINT", help="The server's URL (env RERANKD_ENDPOINT)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _client(endpoint: str) -> RegistryClient:
    key = os.environ.get("RERANKD_ADMIN_KEY") or os.environ.get("RERANKD_API_KEY")
    return RegistryClient(endpoint, key)


def _run(call: Callable[[RegistryClient], Any], endpoint: str) -> Any:
    try:
        with _client(endpoint) as client:
            return call(client)
    except RemoteError as exc:
        typer.echo(
            f"rerankd: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else ""), err=True
        )
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def register(
    file: Annotated[
        Path, typer.Option("--file", "-f", help="The spec: Xinference custom rerank JSON.")
    ],
    persist: Annotated[bool, typer.Option(help="Keep it across restarts.")] = False,
    replace: Annotated[bool, typer.Option(help="Replace a registration of the same name.")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: AsJson = False,
) -> None:
    """Register a model from a JSON spec."""
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        typer.echo(f"rerankd: cannot read {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    result = _run(lambda c: c.register(spec, persist=persist, replace=replace), endpoint)
    if as_json:
        _print_json(result)
    else:
        kept = "persisted" if result.get("persisted") else "not persisted"
        typer.echo(f"registered {result['model_name']} ({kept})")


def launch(
    name: Annotated[str, typer.Argument(help="A registered model name.")],
    replicas: Annotated[
        int | None, typer.Option(help="Replicas (round-robin over devices).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda:0,cuda:1, ...")] = None,
    gpu_idx: Annotated[str | None, typer.Option(help="Xinference style: 0,1")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads per CPU replica.")] = None,
    uid: Annotated[str | None, typer.Option(help="Serve it under this name.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until it is ready.")] = True,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: AsJson = False,
) -> None:
    """Launch a registered model."""
    indexes = [int(i) for i in gpu_idx.split(",") if i.strip()] if gpu_idx else None
    result = _run(
        lambda c: c.launch(
            name,
            wait=wait,
            replicas=replicas,
            device=device,
            gpu_idx=indexes,
            threads=threads,
            model_uid=uid,
        ),
        endpoint,
    )
    if as_json:
        _print_json(result)
    else:
        typer.echo(f"{result['model_uid']}: {result['state']}")


def list_(
    registrations: Annotated[
        bool, typer.Option("--registrations", help="List registrations instead of models.")
    ] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: AsJson = False,
) -> None:
    """List launched models (or registrations)."""
    if registrations:
        found = _run(lambda c: c.registrations(), endpoint)
        if as_json:
            _print_json(found)
            return
        _table(
            "registrations",
            ["name", "source", "language", "origin", "persisted"],
            [
                [
                    r["model_name"],
                    str(r.get("model_uri") or r.get("model_id") or ""),
                    ",".join(r.get("language", [])),
                    r["origin"],
                    "yes" if r["persisted"] else "no",
                ]
                for r in found
            ],
        )
        return
    models = _run(lambda c: c.models(), endpoint)
    if as_json:
        _print_json(models)
        return
    _table(
        "models",
        ["uid", "name", "state", "replicas", "devices", "load s", "in flight"],
        [
            [
                m["id"],
                m["model_name"],
                m["state"],
                str(m["replicas"]),
                ",".join(m["devices"]),
                "" if m.get("load_seconds") is None else f"{m['load_seconds']:.2f}",
                str(m.get("in_flight", 0)),
            ]
            for m in models
        ],
    )
    # Below the table, one line each: in a table cell a sentence wraps one word per line.
    for m in models:
        if m.get("error"):
            typer.echo(f"{m['id']} ({m['state']}): {m['error']}")


def terminate(
    uid: Annotated[str, typer.Argument(help="The launched model's uid.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: AsJson = False,
) -> None:
    """Terminate a model: its requests in flight finish first."""
    result = _run(lambda c: c.terminate(uid), endpoint)
    if as_json:
        _print_json(result)
    else:
        typer.echo(
            f"terminated {result['model_uid']} ({result['drained_requests']} requests drained, "
            f"{result['seconds']:.2f}s)"
        )


def unregister(
    name: Annotated[str, typer.Argument(help="The registered name.")],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: AsJson = False,
) -> None:
    """Remove a registration (its model must not be running)."""
    result = _run(lambda c: c.unregister(name), endpoint)
    if as_json:
        _print_json(result)
    else:
        typer.echo(f"unregistered {result['model_name']}")


def add_commands(app: typer.Typer) -> None:
    app.command()(register)
    app.command()(launch)
    app.command("list")(list_)
    app.command()(terminate)
    app.command()(unregister)
