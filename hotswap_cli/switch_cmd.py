"""``hs switch``, ``hs rollback``, ``hs history``."""


import time
from typing import Annotated, Any

import typer

from hotswap_cli.arguments import finite
from hotswap_cli.output import Column, print_json, print_table, short_time, stdout_is_terminal
from hotswap_cli.waiting import waiting

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _parse_steps(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        steps = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or not all(0 < step <= 100 for step in steps):  # false for NaN too
        raise typer.BadParameter("expected comma-separated percentages in (0, 100], e.g. 10,25,50,100", param_hint="'--steps'")
    return steps


def switch(
    ctx: typer.Context,
    target: Annotated[list[str] | None, typer.Argument(help="[MODEL] VERSION (MODEL may be left out when a default model is set).", metavar="[MODEL] VERSION", show_default=False)] = None,
    canary: Annotated[float | None, typer.Option(help="Send this percent of requests to VERSION; promote later with a plain switch.", min=0.01, max=100, callback=finite)] = None,
    split: Annotated[float | None, typer.Option(help="A/B: send this percent of requests to VERSION until promoted or aborted.", min=0.01, max=100, callback=finite)] = None,
    gradual: Annotated[bool, typer.Option("--gradual", help="Step the share up on a schedule (--steps), each step gated on health.")] = False,
    steps: Annotated[str | None, typer.Option(help="Gradual steps in percent, e.g. 10,25,50,100.")] = None,
    step_seconds: Annotated[float | None, typer.Option(help="Seconds between gradual steps.", min=0.001, max=30 * 86400, callback=finite)] = None,
    step_requests: Annotated[int | None, typer.Option(help="Requests to the new version between gradual steps.", min=1)] = None,
    sticky_key: Annotated[bool, typer.Option("--sticky-key", help="Requests with the same --key always land on the same side.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Switch even if the versions' embedding spaces differ.")] = False,
    abort: Annotated[bool, typer.Option("--abort", help="End the rollout in progress; all traffic back to the old version.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make VERSION active (loaded and warmed first), or roll it out gradually.

    --steps, --step-seconds and --step-requests imply --gradual when no strategy is named;
    options that do not apply to the strategy chosen are a usage error, never ignored.

    Examples: hs switch minilm v2; hs switch minilm v2 --canary 5; hs switch minilm v2 --steps 10,50,100
    """
    target = target or []
    gradual_options = [name for name, value in (("--steps", steps), ("--step-seconds", step_seconds), ("--step-requests", step_requests)) if value is not None]
    if abort and (gradual_options or canary is not None or split is not None or gradual or sticky_key or force):
        raise typer.BadParameter("--abort takes no other option")
    if gradual_options and (canary is not None or split is not None):
        raise typer.BadParameter(f"{', '.join(gradual_options)} apply to --gradual only, not to --canary or --split")
    if gradual_options and not gradual:
        gradual = True  # unambiguous: only a gradual rollout has steps
    if sticky_key and canary is None and split is None and not gradual:
        raise typer.BadParameter("--sticky-key applies to a rollout (--canary, --split or --gradual), not to an immediate switch")
    client = ctx.obj.client()
    if abort:
        if len(target) > 1:
            raise typer.BadParameter("--abort takes at most MODEL", param_hint="[MODEL]")
        _show(client.abort_rollout(target[0] if target else None, trigger="cli"), as_json)
        return
    if not 1 <= len(target) <= 2:
        raise typer.BadParameter("give VERSION or MODEL VERSION", param_hint="[MODEL] VERSION")
    model, version = (None, target[0]) if len(target) == 1 else (target[0], target[1])
    chosen = [name for name, on in (("canary", canary is not None), ("split", split is not None), ("gradual", gradual)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter("choose one of --canary, --split, --gradual")
    strategy = chosen[0] if chosen else "immediate"
    options: dict[str, Any] = {"force": force}
    share = canary if canary is not None else split
    for key, value in (("share", share), ("steps", _parse_steps(steps)), ("step_seconds", step_seconds), ("step_requests", step_requests)):
        if value is not None:
            options[key] = value
    if sticky_key:
        options["sticky"] = True
    with waiting(ctx.obj, f"switching {model + ' ' if model else ''}to {version}", model):
        result = client.switch(model, version, strategy, **{**options, "trigger": "cli"})
    _show(result, as_json)


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    model, old, new, outcome = result["model"], result["from"], result["to"], result["outcome"]
    if outcome == "unchanged":
        typer.echo(f"{model}: {new} is already active")
    elif outcome == "aborted":
        typer.echo(f"{model}: rollout of {old} aborted; all traffic on {new}")
    elif outcome == "started":
        typer.echo(f"{model}: {result['strategy']} rollout of {new} started (from {old}); see `hs status`")
    else:
        forced = " (forced)" if result.get("forced") else ""
        typer.echo(f"{model}: {old} -> {new}{forced}")
    if result.get("members") and outcome != "unchanged":  # a fleet's change: where and at which generation
        typer.echo(f"fleet generation {result['generation']}: served by {', '.join(result['members'])}", err=True)
    if result.get("lagging"):
        typer.echo(f"hs: warning: committed, but {', '.join(result['lagging'])} did not serve it before the deadline (see `hs fleet status`)", err=True)
    if result.get("persisted") is False:
        # Applied and serving, but a restart would bring back the last saved state.
        typer.echo(f"hs: warning: applied but not persisted: {result.get('not_persisted')}", err=True)


def rollback(ctx: typer.Context, model: Annotated[str | None, typer.Argument(help="Model (default: the default model).", metavar="[MODEL]")] = None, as_json: JsonFlag = False) -> None:
    """Return to the previous active version, or end a rollout in progress.

    Example: hs rollback minilm
    """
    client = ctx.obj.client()
    with waiting(ctx.obj, f"rolling back {model or 'the default model'}", model):  # the previous version may load again
        result = client.rollback(model, trigger="cli")
    _show(result, as_json)


def history(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model.", metavar="[MODEL]")] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest last.", min=1)] = 50,
    all_events: Annotated[bool, typer.Option("--all", help="Also loads, unloads and config reloads.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Switches, rollbacks and rollouts: when, from, to, how, why, and how it ended.

    Example: hs history minilm --limit 10
    """
    entries = ctx.obj.client(start=False).history(model, limit=limit, all_events=all_events)
    if as_json:
        print_json(entries)
        return
    now = time.time()
    # One model throughout (the usual `hs history MODEL`): it goes in the title, and its
    # column's room goes to the versions.
    models = {entry.get("model", "-") for entry in entries}
    single = len(models) == 1 and stdout_is_terminal()
    rows = [
        [
            short_time(entry["ts"], now) if stdout_is_terminal() else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry["ts"])),
            entry.get("model", "-"),
            entry["event"],
            entry.get("from", entry.get("version", "-")),
            entry.get("to", "-"),
            entry.get("strategy", "-"),
            entry.get("trigger", "-"),
            entry.get("outcome", "-") + (", forced" if entry.get("forced") else ""),
            entry.get("reason", ""),
        ]
        for entry in entries
    ]
    if single:
        print_table(f"history of {next(iter(models))}", HISTORY_COLUMNS[:1] + HISTORY_COLUMNS[2:], [row[:1] + row[2:] for row in rows])
    else:
        print_table("history", HISTORY_COLUMNS, rows, empty="no switches yet" + ("" if all_events else " (--all also lists loads, unloads and config reloads)"))


HISTORY_COLUMNS = [
    Column("when"),
    Column("model"),
    Column("event"),
    Column("from"),
    Column("to"),
    # Versions are printed whole first; then how it ended, which says a forced switch
    # ("done, forced"); strategy and trigger go when nothing else fits. Long reasons go
    # under the table.
    Column("strategy", drop=1),
    Column("trigger", drop=2),
    Column("outcome"),
    Column("reason", note=True),
]
