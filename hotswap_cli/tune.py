"""``hs tune``: which way of running a model is fastest here, at the accuracy asked for."""


from typing import Annotated, Any

import typer

from hotswap_cli.output import Column, print_json, print_table
from hotswap_cli.waiting import waiting

def columns(task: str) -> list[Column]:
    """A reranker's rows count pairs and agree by rank (Spearman), an embedder's by cosine."""
    agreement = "rho" if task == "rerank" else "cos"
    return [
        Column("path"),
        Column("short/s"),
        Column("passages/s", drop=2),
        Column("single p50", drop=3),
        Column(f"{agreement} mean"),
        Column(f"{agreement} min", drop=1),
        Column("chosen"),
        Column("why not", note=True),
    ]


def tune(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="MODEL or MODEL@VERSION (default: the default model's active version).", metavar="[MODEL[@VERSION]]")] = None,
    force: Annotated[bool, typer.Option("--force", help="Measure again even if this machine's choice is cached.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the measurement (exports and quantisation included).", min=1)] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Measure every path this machine can run the version with (torch fp32/bf16, ONNX
    fp32/int8, OpenVINO fp32/bf16/int8), drop those whose vectors do not agree with fp32
    (a reranker: whose document order does not, by Spearman), and show the fastest. The choice is cached for this CPU, these libraries and these
    weights; a version with backend = "auto" serves it (reloaded now if it changed).

    The first run exports and quantises (a minute or more); later runs read the cache.
    Measure on a quiet machine: the figures share the CPU with whatever else runs.

    Example: hs tune minilm; hs tune minilm@v2 --force
    """
    client = ctx.obj.client()
    label = f"measuring every path of {name or 'the default model'} (a first run exports and quantises)"
    with waiting(ctx.obj, label, name.partition("@")[0] if name else None):
        result = client.tune(name, force=force, timeout=timeout)
    if as_json:
        print_json(result)
        return
    record = result["tuning"]
    task = record.get("task", "embed")
    rows = [_row(row, record["chosen"], task) for row in record["rows"]]
    print_table(f"{result['model']}@{result['version']} on {record['cpu']}", columns(task), rows)
    typer.echo(f"chosen: {record['chosen']}: {record['reason']}", err=True)
    typer.echo(f"{result['model']}@{result['version']} (backend {result['backend']}): {result['applied']}", err=True)


def _number(value: Any, digits: int = 0, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _row(row: dict[str, Any], chosen: str, task: str) -> list[str]:
    why_not = row.get("reason") or ""
    return [
        row["path"],
        _number(row.get("short_per_second")),
        _number(row.get("passages_per_second"), 1),
        _number(row.get("single_p50_ms"), 1, " ms"),
        _number(row.get("mean_spearman" if task == "rerank" else "mean_cosine"), 4),
        _number(row.get("min_spearman" if task == "rerank" else "min_cosine"), 4),
        "*" if row["path"] == chosen else "",
        why_not if row["status"] != "measured" else "",
    ]
