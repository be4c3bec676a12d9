"""``hs fleet``: the fleet this daemon is a member of ([fleet] in its config)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from hotswap_cli.output import Column, print_json, print_table

app = typer.Typer(help="The fleet this daemon is a member of: its members, generations and committed state.", no_args_is_help=True)

COLUMNS = [
    Column("member"),
    Column("generation"),
    Column("lag"),
    Column("serving"),
    Column("fingerprints", drop=2),
    Column("seen", drop=1),
    Column("problem", note=True),
]


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The members (generation, lag behind the fleet, what each serves with which
    fingerprints, when it was last seen), each model's committed state, and the changes in
    progress, as this member reads etcd. A member that cannot reach etcd says so, and since
    when, and shows what it last read.

    Example: hs fleet status
    """
    answer = ctx.obj.client().fleet()
    if as_json:
        print_json(answer)
        return
    rows = [_row(member) for member in answer["members"]]
    title = f"fleet {answer['name']} (generation {answer.get('fleet_generation', '-')}), as {answer['member']} reads it"
    print_table(title, COLUMNS, rows, empty="no member is in etcd")
    for model, state in sorted(answer["models"].items()):
        rollout = state.get("rollout")
        moving = f", {rollout['strategy']} {rollout['share']:g}% to {rollout['target']}" if rollout else ""
        typer.echo(f"{model}: {state['active']}{moving} (generation {state['generation']}, {state['change']} by {state['by'] or '-'})", err=True)
    for proposal in answer["proposals"]:
        typer.echo(f"{proposal['model']}: {proposal['by']} is switching to {proposal['version']}; waiting for {', '.join(proposal['waiting']) or 'nobody'}", err=True)
    if answer["state"] != "connected":
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(answer["degraded_since"] or 0))
        typer.echo(f"{answer['member']} has not reached etcd since {since}: {answer['error']} (serving its last committed state)", err=True)


def _row(member: dict[str, Any]) -> list[str]:
    serving = []
    fingerprints = []
    for model, state in sorted(member["serving"].items()):  # the daemon checked each record's shape
        rollout = state.get("rollout")
        serving.append(f"{model}@{state['active']}" + (f" ({rollout['share']:g}% {rollout['target']})" if rollout else ""))
        fingerprints.extend(f"{version}={value or '-'}" for version, value in sorted((state.get("fingerprints") or {}).items()))
    return [
        member["member"], str(member["generation"]), str(member["lag"]), ", ".join(serving), " ".join(fingerprints),
        f"{member['seen_seconds_ago']:g} s ago", member.get("apply_error") or "",
    ]
