"""``hs encode``: texts in, embeddings out."""


import sys
from collections.abc import Iterator
from enum import Enum
from typing import Annotated, BinaryIO

import typer

from hotswapd.client import EncodeResult

from hotswap_cli.formats import WRITERS, Writer
from hotswap_cli.settings import Settings

STDIN_CHUNK = 256  # texts per request when streaming stdin; well under daemon.max_batch_texts


def read_lines(stream: BinaryIO, chunk_size: int) -> Iterator[list[bytes]]:
    """Lines of ``stream`` as raw bytes (the daemon checks UTF-8), ``chunk_size`` at a time."""
    chunk: list[bytes] = []
    for line in stream:
        chunk.append(line.rstrip(b"\r\n") if line.endswith(b"\n") else line)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class OutputFormat(str, Enum):
    json = "json"
    jsonl = "jsonl"
    npy = "npy"


def encode(
    ctx: typer.Context,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed; none or '-' reads one text per line from stdin.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (default: daemon.default_model).")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.json,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Return vectors without L2 normalisation.")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Texts per request when reading stdin.")] = STDIN_CHUNK,
    key: Annotated[str | None, typer.Option("--key", help="Sticky key: during a rollout the same key always gets the same version.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Reading stdin, follow the active version instead of pinning the first chunk's.")] = False,
) -> None:
    """Embed texts with a model served by the daemon."""
    settings: Settings = ctx.obj
    client = settings.client()
    normalize = False if no_normalize else None
    out = sys.stdout.buffer
    writer: Writer = WRITERS[fmt.value](out)
    if texts and texts != ["-"]:
        writer.write(client.encode(texts, model, normalize=normalize, key=key))
        writer.finish()
        out.flush()
        return
    from hotswapd.errors import InvalidText, TextTooLong

    try:
        _encode_stdin(writer, client.encode_stream(read_lines(sys.stdin.buffer, chunk_size), model, normalize=normalize, key=key, pin=not follow))
    except (InvalidText, TextTooLong) as exc:  # name the line, as the user counts them
        raise type(exc)(exc.message.replace("input text ", "line ", 1), exc.index) from None
    out.flush()


def _encode_stdin(writer: Writer, results: Iterator[EncodeResult]) -> None:
    if not sys.stderr.isatty():
        for result in results:
            writer.write(result)
        writer.finish()
        return
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("encoding"), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("encode", total=None)
        for result in results:
            writer.write(result)
            progress.advance(task, result.count)
    writer.finish()
