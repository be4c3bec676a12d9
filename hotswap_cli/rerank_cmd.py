"""``hs rerank``: a query's documents ordered by a rerank version (a cross-encoder)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hotswap_cli.output import Column, print_json, print_table
from hotswap_cli.shared_options import Settings

RERANK_COLUMNS = [Column("rank"), Column("index"), Column("score"), Column("document", wrap=True)]
TEXT_CHARS = 200  # a document longer than this is cut in the table (json and jsonl have it whole)
MAX_STDIN_DOCUMENTS = 4096  # the daemon's limit per request (hotswapd.text.pairs)


class RerankFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


def rerank(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What the documents are scored against.")],
    documents: Annotated[list[str] | None, typer.Argument(help="Documents (default: one per line of --input, or of stdin).", metavar="[DOC]...", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="A rerank model, MODEL or MODEL@VERSION (default: daemon.default_model).", metavar="MODEL")] = None,
    top: Annotated[int | None, typer.Option("--top", "-n", min=1, help="Only the N best.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="Documents: txt (one per line), jsonl, csv or parquet (--text-field).", exists=True, dir_okay=False)] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="The document's field or column (jsonl, csv, parquet).")] = "text",
    raw: Annotated[bool, typer.Option("--raw", help="The model's raw logits instead of its sigmoid scores.")] = False,
    key: Annotated[str | None, typer.Option("--key", help="Sticky key: during a rollout the same key always gets the same version.")] = None,
    fmt: Annotated[RerankFormat, typer.Option("--format", "-f", help="table (TSV when piped), json (the whole answer) or jsonl (a line per document).")] = RerankFormat.table,
) -> None:
    """Order documents by relevance to QUERY with a rerank version (task = "rerank").

    Each reply names the version that scored it; during a canary one request is scored
    wholly by one version. Example: hs rerank "what do cats eat" "cats eat fish" "stocks rose" -m rr
    """
    settings: Settings = ctx.obj
    if documents and input_file is not None:
        raise typer.BadParameter("give documents or --input FILE, not both", param_hint="'--input'")
    texts = documents or _read_documents(input_file, text_field)
    if not texts:
        raise typer.BadParameter("no documents: give them as arguments, with --input FILE, or one per line on stdin", param_hint="[DOC]...")
    answer = settings.client().rerank(query, texts, model, top_n=top, raw_scores=raw, key=key)
    hits = answer["results"]
    if fmt is RerankFormat.json:
        print_json({**answer, "results": [{**hit, "document": texts[hit["index"]]} for hit in hits]})
        return
    if fmt is RerankFormat.jsonl:
        version = f"{answer['model']}@{answer['version']}"
        sys.stdout.write("".join(json.dumps({"rank": rank, **hit, "document": texts[hit["index"]], "version": version}) + "\n" for rank, hit in enumerate(hits, 1)))
        return
    rows = [[str(rank), str(hit["index"]), f"{hit['score']:.6g}", _short(texts[hit["index"]])] for rank, hit in enumerate(hits, start=1)]
    print_table(f"{answer['model']}@{answer['version']} ({answer['fingerprint']}), {len(texts)} documents", RERANK_COLUMNS, rows)


def _read_documents(path: Path | None, text_field: str) -> list[str]:
    """Documents from a data file (the readers of `hs encode --input`), or stdin's lines."""
    if path is not None:
        from hotswapd.files.readers import RowReader, detect_format

        rows: list[Any] = list(RowReader(path, detect_format(path, None), text_field, None))
        texts = [row.text for row in rows]
    elif sys.stdin.isatty():
        return []
    else:
        texts = [line.rstrip("\r\n") for line in sys.stdin.buffer.read(64 * 2**20 + 1).decode("utf-8", errors="strict").splitlines()]
    if len(texts) > MAX_STDIN_DOCUMENTS:
        raise typer.BadParameter(f"{len(texts)} documents; at most {MAX_STDIN_DOCUMENTS} in one rerank", param_hint="[DOC]...")
    return texts


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_CHARS else flat[: TEXT_CHARS - 1] + "…"
