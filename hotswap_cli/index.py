"""``hs index build``: a version's corpus, built through the daemon (hotswapd.jobs.corpus_build)."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from hotswap_cli.progress import RowProgress
from hotswap_cli.shared_options import Settings

app = typer.Typer(help="Build the corpus a version searches (embeddings_path).", no_args_is_help=True)


@app.command()
def build(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="MODEL@VERSION: the version whose corpus this is.", metavar="MODEL@VERSION")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="txt (one text per line), jsonl, csv or parquet.", exists=True, dir_okay=False, readable=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The corpus directory to write (new, or an interrupted build's with --resume).")],
    text_field: Annotated[str, typer.Option("--text-field", help="The text's field or column (jsonl, csv, parquet).")] = "text",
    id_field: Annotated[str | None, typer.Option("--id-field", help="The id's field or column (default: 'id' when present, else the row number).")] = None,
    input_format: Annotated[str | None, typer.Option("--input-format", help="txt, jsonl, csv or parquet (default: from the file name).")] = None,
    texts: Annotated[bool, typer.Option("--texts/--no-texts", help="Keep the texts in the corpus (search results show them).")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted build in --output: no row lost or written twice.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted build in --output and start over.")] = False,
    ann: Annotated[bool, typer.Option("--ann", help="Also build an approximate index (usearch HNSW) and report its recall@10.")] = False,
    dtype: Annotated[list[str] | None, typer.Option("--dtype", help="Also write a compact copy searched first, rescored by the float rows: binary (1/32 the memory) or int8 (1/4). Repeatable.")] = None,
) -> None:
    """Encode a file with exactly MODEL@VERSION into a corpus directory, resumable.

    Example: hs index build minilm@v2 --input docs.jsonl --id-field doc_id --output corpora/v2
    """
    from hotswapd.jobs.corpus_build import build as build_corpus
    from hotswapd.files.readers import RowReader, detect_format

    if resume and restart:
        raise typer.BadParameter("--resume goes on with the interrupted build, --restart discards it: give one", param_hint="'--restart'")
    bad = [kind for kind in dtype or [] if kind not in ("binary", "int8")]
    if bad:  # before the build, not after it
        raise typer.BadParameter(f"binary or int8, not {bad[0]!r}", param_hint="'--dtype'")
    settings: Settings = ctx.obj
    reader = RowReader(input_file, detect_format(input_file, input_format), text_field, id_field)
    stat = input_file.stat()
    facts: dict[str, Any] = {"path": str(input_file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                             "format": reader.format, "text_field": text_field, "id_field": id_field}
    client = settings.client()
    with RowProgress(reader) as progress:
        result = build_corpus(client, version, reader, output, input_facts=facts, keep_texts=texts, resume=resume, on_rows=progress.on_rows, restart=restart,
                              pace=progress.pace)
    new = result.rows - result.resumed_from
    resumed = f" (resumed after {result.resumed_from:,})" if result.resumed_from else ""
    sys.stderr.write(
        f"built {output}: {result.rows:,} rows{resumed}, {new:,} in {result.seconds:.1f} s "
        f"({new / max(result.seconds, 1e-9):,.0f} rows/s) with {result.model}@{result.version} ({result.fingerprint})\n"
    )
    for kind in dtype or []:
        _compact(output, kind)
    if ann:
        _ann(output)


@app.command("compact")
def compact_copy(
    corpus: Annotated[Path, typer.Argument(help="A finished corpus directory.", exists=True, file_okay=False)],
    dtype: Annotated[str, typer.Option("--dtype", help="binary (sign bits: 1/32 of the float rows) or int8 (the corpus's own ranges: 1/4).")] = "binary",
) -> None:
    """Write (or write again) a corpus's compact copy: searches scan it, then rescore the
    best candidates with the float rows, which stay on disk.

    Example: hs index compact corpora/v2 --dtype binary
    """
    _compact(corpus, dtype)


def _compact(corpus: Path, dtype: str) -> None:
    from hotswapd.corpus.compact_index import COMPACT, write_compact

    if dtype not in COMPACT:
        raise typer.BadParameter(f"one of {', '.join(COMPACT)}, not {dtype!r}", param_hint="'--dtype'")
    written = write_compact(corpus, dtype)
    sys.stderr.write(f"wrote {written} ({written.stat().st_size / 2**20:,.1f} MiB; the float rows: {(corpus / 'embeddings.npy').stat().st_size / 2**20:,.1f} MiB)\n")


@app.command("ann")
def ann_index(corpus: Annotated[Path, typer.Argument(help="A finished corpus directory.", exists=True, file_okay=False)]) -> None:
    """Build (or build again) a corpus's approximate index, and measure its recall@10.

    The daemon searches through it when it is there (hs search --exact scans every row).
    Example: hs index ann corpora/v2
    """
    from hotswapd.corpus.files import read_manifest

    read_manifest(corpus)  # a finished corpus only
    _ann(corpus)


def _ann(corpus: Path) -> None:
    from hotswapd.corpus.ann import build_ann

    facts = build_ann(corpus)
    sys.stderr.write(f"approximate index of {corpus}: {facts.rows:,} rows in {facts.seconds:.1f} s, recall@10 {facts.recall_at_10:.3f} vs exact search\n")


@app.command()
def bridge(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="MODEL@VERSION: the new version, whose queries are mapped.", metavar="MODEL@VERSION")],
    to_corpus_of: Annotated[str, typer.Option("--to-corpus-of", help="The version (of the same model) whose corpus is searched meanwhile.", metavar="VERSION")],
    sample: Annotated[Path, typer.Option("--sample", help="Texts to fit and measure the map on (txt, jsonl, csv, parquet): say 2,000 like the corpus's.", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The bridge directory to write; give it to the new version as bridge_path.")],
    text_field: Annotated[str, typer.Option("--text-field", help="The text's field or column (jsonl, csv, parquet).")] = "text",
    held_out: Annotated[float, typer.Option("--held-out", min=0.05, max=0.5, help="The share of the sample kept out of the fit to measure recall@10 on.")] = 0.2,
) -> None:
    """Let a new version search an old version's corpus until its own is built.

    Fits a linear map from VERSION's query space into the old version's on the sample and
    measures recall@10 against VERSION's own exact search on a held-out part. The daemon
    uses it only when that recall reaches the version's bridge_min_recall.
    Example: hs index bridge minilm@v2 --to-corpus-of v1 --sample sample.txt -o bridges/v2-v1
    """
    from hotswapd.jobs.bridge_fit import fit_bridge
    from hotswapd.files.readers import RowReader, detect_format

    settings: Settings = ctx.obj
    reader = RowReader(sample, detect_format(sample, None), text_field)
    done = fit_bridge(settings.client(), version, to_corpus_of, (row.text for row in reader), output, held_out=held_out)
    m = done.manifest
    sys.stderr.write(
        f"bridge {m.model}@{m.from_version} -> the corpus of {m.model}@{m.to_version} ({m.kind} map): recall@10 {m.recall_at_10:.3f} "
        f"on {m.held_out:,} held-out queries (fitted on {m.fitted_on:,}); written to {output}. "
        f"Give {m.model}@{m.from_version} bridge_path = \"{output}\"\n"
    )
