"""``hs index build``: a version's corpus, built through the daemon (hotswapd.corpus.build)."""

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hotswap_cli.settings import Settings

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
) -> None:
    """Encode a file with exactly MODEL@VERSION into a corpus directory, resumable.

    Example: hs index build minilm@v2 --input docs.jsonl --id-field doc_id --output corpora/v2
    """
    from hotswapd.corpus.build import build as build_corpus
    from hotswapd.files.readers import RowReader, detect_format

    settings: Settings = ctx.obj
    reader = RowReader(input_file, detect_format(input_file, input_format), text_field, id_field)
    stat = input_file.stat()
    facts: dict[str, Any] = {"path": str(input_file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                             "format": reader.format, "text_field": text_field, "id_field": id_field}
    client = settings.client()
    with _progress(reader) as on_rows:
        result = build_corpus(client, version, reader, output, input_facts=facts, keep_texts=texts, resume=resume, on_rows=on_rows)
    new = result.rows - result.resumed_from
    resumed = f" (resumed after {result.resumed_from:,})" if result.resumed_from else ""
    sys.stderr.write(
        f"built {output}: {result.rows:,} rows{resumed}, {new:,} in {result.seconds:.1f} s "
        f"({new / max(result.seconds, 1e-9):,.0f} rows/s) with {result.model}@{result.version} ({result.fingerprint})\n"
    )


class _progress:
    """A progress bar on stderr when it is a terminal (rows, rate, ETA by the input read)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._display: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._display = Progress(
            BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self._display.start()
        task = self._display.add_task("index", total=self._reader.size(), rows=0, rate=0.0)
        started = time.perf_counter()
        first: list[int] = []

        def on_rows(rows: int) -> None:
            first.append(rows) if not first else None
            done = rows - first[0]
            self._display.update(task, completed=self._reader.position(), rows=rows, rate=done / max(time.perf_counter() - started, 1e-9))

        return on_rows

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()
