"""``hs tokens``: how many tokens texts are for a version (its own tokenizer, after its prompt)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hotswap_cli.output import Column, print_json, print_table
from hotswap_cli.shared_options import Settings


def tokens(
    ctx: typer.Context,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts (default: one per line of stdin).", metavar="[TEXT]...", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="MODEL or MODEL@VERSION (default: daemon.default_model).", metavar="MODEL")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One of the version's prompts by name, put before each text (it counts).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts, with each text's tokens.")] = False,
) -> None:
    """Count tokens as the version reads them (what `usage` reports), without running the model.

    Example: hs tokens "hello world" -m minilm; hs tokens < docs.txt | sort -n | tail
    """
    settings: Settings = ctx.obj
    if not texts:
        texts = [] if sys.stdin.isatty() else sys.stdin.read().splitlines()
    if not texts:
        raise typer.BadParameter("no texts: give them as arguments, or one per line on stdin", param_hint="[TEXT]...")
    answer = settings.client().count_tokens(texts, model, prompt=prompt, details=as_json)
    if as_json:
        print_json(answer)
        return
    title = f"{answer['model']}@{answer['version']}: {answer['total']:,} tokens (reads at most {answer['max_tokens'] or '-'} per text)"
    print_table(title, [Column("tokens"), Column("text", wrap=True)], [[str(count), text] for count, text in zip(answer["tokens"], texts, strict=True)])
