"""``hs search``: a query scored against a version's corpus, by that same version."""

from typing import Annotated

import typer
from hotswap_cli.models import JsonFlag
from hotswap_cli.output import Column, print_json, print_table
from hotswap_cli.shared_options import Settings

SEARCH_COLUMNS = [Column("rank"), Column("score"), Column("id"), Column("text", drop=1, wrap=True)]
RERANKED_COLUMNS = [Column("rank"), Column("score"), Column("cosine", drop=2), Column("id"), Column("text", drop=1, wrap=True)]
TEXT_CHARS = 200  # a stored text longer than this is cut in the table (--json has it whole)


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="MODEL or MODEL@VERSION (default: daemon.default_model).", metavar="MODEL")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="How many results.")] = 10,
    key: Annotated[str | None, typer.Option("--key", help="Sticky key: during a rollout the same key always gets the same version.")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Scan every row even when the corpus has an approximate index.")] = False,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One of the version's prompts by name (query), put before the query.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="float (every float row), binary or int8 (that compact copy, rescored by float rows); default: the corpus's fastest.")] = None,
    rerank: Annotated[str | None, typer.Option("--rerank", help="Then order the candidates with this rerank model (MODEL or MODEL@VERSION).", metavar="MODEL")] = None,
    candidates: Annotated[int, typer.Option("--candidates", min=1, max=1000, help="With --rerank: how many nearest rows the reranker reads.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Search the corpus of the version that encodes the query (embeddings_path).

    During a canary or split the version is picked once: the query is never scored against
    the other version's corpus. Example: hs search "interest rates" -m minilm -k 5
    """
    settings: Settings = ctx.obj
    client = settings.client()
    if rerank is not None:
        answer = client.search_reranked(query, model, rerank=rerank, k=k, candidates=candidates, key=key, exact=exact, prompt=prompt)
    else:
        answer = client.search(query, model, k=k, key=key, exact=exact, prompt=prompt, precision=precision)
    if as_json:
        print_json(answer)
        return
    hits = answer["results"][0]
    reranker = answer.get("reranker")
    if reranker:
        rows = [[str(rank), f"{hit['score']:.4f}", f"{hit['retrieval_score']:.4f}", str(hit["id"]), _short(hit.get("text"))] for rank, hit in enumerate(hits, start=1)]
    else:
        rows = [[str(rank), f"{hit['score']:.4f}", str(hit["id"]), _short(hit.get("text"))] for rank, hit in enumerate(hits, start=1)]
    title = f"{answer['model']}@{answer['version']} ({answer['fingerprint']}), {answer['rows']:,} rows, {answer['index']}, {answer['search_ms']:.1f} ms"
    if reranker:
        title += f"; {answer['candidates']} candidates reranked by {reranker['model']}@{reranker['version']} ({reranker['fingerprint']})"
    if answer.get("bridge"):
        title += f", through a bridge to {answer['bridge']['to']}'s corpus (recall@10 {answer['bridge']['recall_at_10']:.3f})"
    print_table(title, RERANKED_COLUMNS if reranker else SEARCH_COLUMNS, rows, empty="the corpus is empty")


def _short(text: str | None) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_CHARS else flat[: TEXT_CHARS - 1] + "…"
