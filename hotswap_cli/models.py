"""``hs models``, ``hs preload``, ``hs evict``, ``hs status``."""


import time
from typing import Annotated, Any

import typer

from hotswap_cli.output import Column, human_ago, human_bytes, human_duration, print_json, print_table, short_duration
from hotswap_cli.shared_options import Settings
from hotswap_cli.waiting import waiting

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print model names only, one per line.")]

# What a narrow terminal keeps, most useful first: which version serves and how it computes
# (path: torch or onnx-int8), then its memory and corpus; the rest goes first.
MODELS_COLUMNS = [
    Column("model"),
    Column("version"),
    Column("active"),
    Column("state"),
    Column("path"),
    Column("memory", drop=5),
    Column("corpus", drop=6),
    Column("dim", drop=7),
    Column("max tokens", drop=10),
    Column("unloads", drop=9),
    Column("source", drop=8, wrap=True),
    Column("why", note=True, drop=11),
    Column("error", note=True),
]


def models(ctx: typer.Context, as_json: JsonFlag = False, quiet: QuietFlag = False) -> None:
    """List every configured version: which is active, its share, loaded or not, memory.

    Example: hs models; hs models -q; hs models --json | jq '.[].name'
    """
    rows = ctx.obj.client(start=False).models()
    if as_json:
        print_json(rows)
        return
    if quiet:
        typer.echo("\n".join(row["name"] for row in rows))
        return
    default = next((row["name"] for row in rows if row.get("default")), None)
    title = f"models (default: {default})" if default else "models"
    print_table(title, MODELS_COLUMNS, [version_row(row, item) for row in rows for item in row.get("version_detail", [])], empty="no models configured")


def version_row(model: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """One line of `hs models`: a configured version of a model."""
    if item["active"]:
        active = "*" if item["share"] >= 100 else f"* {item['share']:g}%"
    else:
        active = f"{item['share']:g}%" if item["share"] > 0 else ""
    unloads = "-"
    if item["state"] == "loaded":
        unloads = "pinned" if item["pinned"] else ("in " + short_duration(max(0.0, item["unloads_at"] - time.time())) if item["unloads_at"] else "never")
    return [
        model["name"],
        item["version"],
        active,
        item["state"],
        path_cell(item),
        human_bytes(item.get("memory_bytes")),
        corpus_cell(item.get("corpus")),
        str(item["dimension"]) if item.get("dimension") else "-",
        str(item["max_tokens"]) if item.get("max_tokens") else "-",
        unloads,
        item["source"] or "-",  # an ensemble has members, not a source
        item.get("path_reason") or "",
        item.get("last_error") or (item.get("corpus") or {}).get("problem") or "",
    ]


def path_cell(item: dict[str, Any]) -> str:
    """The backend and precision a version runs in ("onnx-int8"); "auto: ..." for a chosen one."""
    path = item.get("path")
    if item["backend"] == "auto":
        return f"auto: {path}" if item["state"] == "loaded" and path else "auto"
    return str(path or item["backend"])


def _corpus_line(corpus: dict[str, Any]) -> str:
    if "problem" in corpus:
        return f"refused: {corpus['problem']}"
    bridge = f", through a bridge to {corpus['bridge']['to']}'s" if corpus.get("bridge") else ""
    return f"{corpus['rows']:,} rows x {corpus['dim']}, {corpus['memory_mb']:,.0f} MiB, {corpus['index']}{bridge} ({corpus['path']})"


def corpus_cell(corpus: dict[str, Any] | None) -> str:
    """A version's corpus in a word: its rows and index, a bridge, or that it was refused."""
    if not corpus:
        return "-"
    if "problem" in corpus:
        return "refused"
    index = "ann" if str(corpus.get("index", "")).startswith("ann") else "exact"
    bridge = f" via {corpus['bridge']['to']}" if corpus.get("bridge") else ""
    return f"{corpus['rows']:,} {index}{bridge}"


def preload(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model to load now (MODEL@VERSION for another version).", metavar="MODEL")], as_json: JsonFlag = False) -> None:
    """Load a model's active version now, so the next encode does not wait.

    Example: hs preload minilm; hs preload minilm@v2
    """
    client = ctx.obj.client()
    with waiting(ctx.obj, f"loading {name}", name.partition("@")[0]):
        result = client.preload(name)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"loaded {result['model']}@{result['version']} on {result['device']} in {result['load_seconds']:.2f} s "
        f"({human_bytes(result['memory_bytes'])})"
    )


def evict(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model to unload.", metavar="MODEL")], as_json: JsonFlag = False) -> None:
    """Unload a model; it loads again on next use.

    Example: hs evict minilm
    """
    result = ctx.obj.client(start=False).evict(name)  # no daemon: nothing is loaded to unload
    if as_json:
        print_json(result)
        return
    evicted = ", ".join(f"{result['model']}@{v}" for v in result["evicted"])
    typer.echo(f"evicted {evicted}" if evicted else f"{result['model']} was not loaded")


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the daemon: pid, uptime, socket, config, loaded models, memory. Never starts one.

    Example: hs status; hs status --json
    """
    settings: Settings = ctx.obj
    info = settings.client(start=False).status()
    if as_json:
        print_json(info)
        return
    show_status(info)


def metrics(ctx: typer.Context) -> None:
    """Print the daemon's Prometheus metrics (text exposition format).

    Example: hs metrics | grep hotswapd_requests
    """
    typer.echo(ctx.obj.client(start=False).metrics(), nl=False)


def show_status(info: dict[str, Any]) -> None:
    rows = [
        ["pid", str(info["pid"])],
        ["phase", info["phase"]],
        ["uptime", human_duration(info["uptime_seconds"])],
        ["socket", info["socket"]],
        ["http", f"{info['http']}/v1 (OpenAI-compatible)" if info.get("http") else "off"],
        ["config", info["config_path"] or "built-in default"],
        ["default model", info.get("default_model") or "-"],
        ["active", ", ".join(f"{m}@{v}" for m, v in sorted(info.get("active", {}).items())) or "-"],
        ["loaded", ", ".join(info["loaded"]) or "none"],
        *[[f"corpus of {name}", _corpus_line(corpus)] for name, corpus in sorted(info.get("corpora", {}).items())],
        ["requests in flight", str(info["in_flight"])],
        ["memory (RSS)", human_bytes(info["rss_bytes"])],
        ["memory (models)", human_bytes(info["models_memory_bytes"])],
    ]
    cache = info.get("cache")
    if cache:
        looked_up = cache["hits"] + cache["misses"]
        rate = f", {cache['hits'] / looked_up:.0%} hit rate" if looked_up else ""
        rows.append([
            "embedding cache",
            f"{cache['entries']} vectors, {human_bytes(cache['bytes'])} of {human_bytes(cache['max_bytes'])}; "
            f"{cache['hits']} hits, {cache['misses']} misses{rate}",
        ])
    for item in info.get("evicted", []):
        rows.append([f"evicted {item['model']}@{item['version']}", f"{item['reason']} ({human_ago(item['at'])})"])
    for model, rollout in sorted(info.get("rollouts", {}).items()):
        health = rollout["health"][rollout["target"]]
        rows.append([
            f"rollout {model}",
            f"{rollout['strategy']} {rollout['source']} -> {rollout['target']} at {rollout['share']:g}%; "
            f"{rollout['target']}: {health['requests']} req, {health['error_rate']:.1%} errors, p95 {health['p95_ms'] or '-'} ms",
        ])
    bench = info.get("periodic_bench")
    if bench:
        last = f"last {human_ago(bench['last_round_at'])}" if bench.get("last_round_at") else "none finished yet"
        state = "; a round is running" if bench.get("running") else ""
        problem = f"; last problem: {bench['last_problem']}" if bench.get("last_problem") else ""
        rows.append(["periodic bench", f"{bench['rounds']} rounds, {last}{state}{problem} (hs bench --history)"])
    fleet = info.get("fleet")
    if fleet:
        link = f"connected to etcd ({fleet['etcd']})" if fleet["state"] == "connected" else (
            f"degraded for {short_duration(time.time() - (fleet['degraded_since'] or time.time()))}: {fleet['error']}; serving its last committed state")
        rows.append(["fleet", f"{fleet['name']} as {fleet['member']}, generation {fleet['generation'] if fleet['generation'] is not None else '-'}, {link} (hs fleet status)"])
    if info.get("config_error"):
        rows.append(["config error", info["config_error"]])
    if info.get("restart_needed"):
        rows.append(["restart needed", f"{', '.join(info['restart_needed'])} changed in the config; applied on the next start (hs daemon stop, then start it)"])
    print_table(f"hotswapd {info['version']}", [Column("field"), Column("value", wrap=True)], rows, header=False)
