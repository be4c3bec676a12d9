"""``hs models``, ``hs preload``, ``hs evict``, ``hs status``."""


from typing import Annotated, Any

import typer

from hotswap_cli.output import human_ago, human_bytes, human_duration, print_json, print_table
from hotswap_cli.settings import Settings

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List configured models and what is loaded."""
    rows = ctx.obj.client().models()
    if as_json:
        print_json(rows)
        return
    table = []
    for row in rows:
        table.append(_model_row(row))
        # Other loaded versions (a previous one kept for rollback, a canary, a pinned one).
        for item in row.get("loaded_detail", []):
            if item["version"] != row["version"]:
                table.append(_loaded_row(item))
    print_table("models", ["name", "version", "backend", "source", "loaded", "memory", "device", "last used"], table)


def _loaded_row(item: dict[str, Any]) -> list[str]:
    return [
        "",
        item["version"],
        item["backend"],
        "",
        "yes" + (" (pinned)" if item["pinned"] else ""),
        human_bytes(item["memory_bytes"]),
        item["device"],
        human_ago(item["last_used"]),
    ]


def _model_row(row: dict[str, Any]) -> list[str]:
    name = row["name"] + (" (default)" if row.get("default") else "")
    loaded = "yes" if row["loaded"] else ("failed" if row.get("last_error") else "no")
    return [
        name,
        row["version"],
        row["backend"],
        row["source"],
        loaded,
        human_bytes(row.get("memory_bytes")),
        row.get("device") or "-",
        human_ago(row.get("last_used")),
    ]


def preload(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model to load now.")], as_json: JsonFlag = False) -> None:
    """Load a model's active version now, so the next encode does not wait."""
    result = ctx.obj.client().preload(name)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"loaded {result['model']}@{result['version']} on {result['device']} in {result['load_seconds']:.2f} s "
        f"({human_bytes(result['memory_bytes'])})"
    )


def evict(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model to unload.")], as_json: JsonFlag = False) -> None:
    """Unload a model; it loads again on next use."""
    result = ctx.obj.client().evict(name)
    if as_json:
        print_json(result)
        return
    evicted = ", ".join(f"{result['model']}@{v}" for v in result["evicted"])
    typer.echo(f"evicted {evicted}" if evicted else f"{result['model']} was not loaded")


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the daemon: pid, uptime, socket, config, loaded models, memory."""
    settings: Settings = ctx.obj
    info = settings.client().status()
    if as_json:
        print_json(info)
        return
    show_status(info)


def metrics(ctx: typer.Context) -> None:
    """Print the daemon's Prometheus metrics (text exposition format)."""
    typer.echo(ctx.obj.client().metrics(), nl=False)


def show_status(info: dict[str, Any]) -> None:
    rows = [
        ["pid", str(info["pid"])],
        ["phase", info["phase"]],
        ["uptime", human_duration(info["uptime_seconds"])],
        ["socket", info["socket"]],
        ["config", info["config_path"] or "built-in default"],
        ["default model", info.get("default_model") or "-"],
        ["active", ", ".join(f"{m}@{v}" for m, v in sorted(info.get("active", {}).items())) or "-"],
        ["loaded", ", ".join(info["loaded"]) or "none"],
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
    if info.get("config_error"):
        rows.append(["config error", info["config_error"]])
    print_table(f"hotswapd {info['version']}", ["", ""], rows, header=False)
