"""``hs encode``: texts in, embeddings out."""


from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from hotswap_cli.formats import WRITERS, Writer
from hotswap_cli.shared_options import Settings

from hotswapd.client.connection import Client
from hotswapd.client.encode_result import EncodeResult
from hotswapd.wire.protocol import VECTOR_DTYPE

STDIN_CHUNK = 512  # texts per request when streaming stdin (as a file job's: hotswapd.jobs.engine.CHUNK); well under daemon.max_batch_texts
LINE_LIMIT = 16 * 2**20  # bytes; far over any daemon.max_text_bytes worth setting


class ReadCounter:
    """How far through its input ``read_lines`` is, for the progress bar's ETA."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.ended = False  # the input is read to its end: ``lines`` is its total


def read_lines(stream: BinaryIO, chunk_size: int, counter: ReadCounter | None = None) -> Iterator[list[bytes]]:
    """Lines of ``stream`` as raw bytes (the daemon checks UTF-8), ``chunk_size`` at a time.
    A line is read at most LINE_LIMIT bytes at a time: input without newlines (a binary
    file, /dev/zero) is refused at once instead of filling memory."""
    chunk: list[bytes] = []
    number = 0
    while line := stream.readline(LINE_LIMIT + 1):
        number += 1
        if len(line) > LINE_LIMIT:
            from hotswapd.errors import TextTooLong

            raise TextTooLong(f"line {number} is longer than {LINE_LIMIT // 2**20} MiB; is this a text file?", number - 1)
        if counter is not None:
            counter.bytes += len(line)
            counter.lines += 1
        chunk.append(line.rstrip(b"\r\n") if line.endswith(b"\n") else line)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if counter is not None:
        counter.ended = True
    if chunk:
        yield chunk


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


class VectorType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    int8 = "int8"
    uint8 = "uint8"
    binary = "binary"
    ubinary = "ubinary"


class OutputFormat(str, Enum):
    json = "json"
    jsonl = "jsonl"
    npy = "npy"


def encode(
    ctx: typer.Context,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed; none or '-' reads one text per line from stdin.", metavar="TEXT...")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="MODEL or MODEL@VERSION (default: daemon.default_model).", metavar="MODEL")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format; npy needs a redirect (> vectors.npy).")] = OutputFormat.json,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Return the pooled vectors without L2 normalisation (the model's own Normalize step is skipped too).")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Texts per request when reading stdin.")] = STDIN_CHUNK,
    key: Annotated[str | None, typer.Option("--key", help="Sticky key: during a rollout the same key always gets the same version.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Reading stdin, follow the active version instead of pinning the first chunk's.")] = False,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One of the version's prompts by name (query, passage), put before every text.")] = None,
    dtype: Annotated[VectorType, typer.Option("--dtype", help="float32, float16, int8, uint8 (the version's calibration ranges), binary or ubinary (sign bits, 8 a byte); npy keeps it, json gives numbers.")] = VectorType.float32,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="A data file: txt (one text per line), jsonl, csv or parquet.", exists=True, dir_okay=False, readable=True, rich_help_panel="Files")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file: .parquet, .npy (+ .ids.jsonl) or .jsonl; resumable.", dir_okay=False, rich_help_panel="Files")] = None,
    text_field: Annotated[str, typer.Option("--field", "--text-field", help="The text's field or column (jsonl, csv, parquet).", rich_help_panel="Files")] = "text",
    id_field: Annotated[str | None, typer.Option("--id-field", help="The id's field or column (default: 'id' when present, else the row number).", rich_help_panel="Files")] = None,
    input_format: Annotated[str | None, typer.Option("--input-format", help="txt, jsonl, csv or parquet (default: from the file name).", rich_help_panel="Files")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with the interrupted job writing --output: no row lost or written twice.", rich_help_panel="Files")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the interrupted job writing --output (OUTPUT.partial) and start over.", rich_help_panel="Files")] = False,
    on_error: Annotated[OnError, typer.Option("--on-error", help="A bad row (missing field, not a string, empty, refused): stop, or skip it into NAME.rejects.jsonl.", rich_help_panel="Files")] = OnError.fail,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Run the file job on Ray: alone, a local Ray; 'auto' or ray://HOST:10001, a cluster (the ray extra).", rich_help_panel="Ray")] = None,
    ray_actors: Annotated[int, typer.Option("--actors", min=1, help="Ray actors, each with the version loaded.", rich_help_panel="Ray")] = 1,
    ray_cpus: Annotated[float, typer.Option("--cpus-per-actor", min=0.1, help="CPUs (and compute threads) per actor.", rich_help_panel="Ray")] = 1.0,
) -> None:
    """Embed texts with a model served by the daemon.

    Examples: hs encode "hello world" -m minilm; cat docs.txt | hs encode -f jsonl > out.jsonl;
    hs encode -f npy < docs.txt > vectors.npy;
    hs encode --input docs.parquet --id-field doc_id --output vectors.parquet -m minilm
    """
    settings: Settings = ctx.obj
    normalize = False if no_normalize else None
    kind = dtype.value
    calibrated = kind in ("int8", "uint8")
    if kind != "float32" and ray is not None:
        raise typer.BadParameter("--dtype applies to stdout and to file jobs on this machine; a Ray job writes float32", param_hint="'--dtype'")
    if calibrated and no_normalize:
        raise typer.BadParameter("int8 and uint8 are calibrated on normalized vectors: drop --no-normalize", param_hint="'--dtype'")
    if resume and restart:
        raise typer.BadParameter("--resume goes on with the interrupted job, --restart discards it: give one", param_hint="'--restart'")
    if input_file is None and (output is not None or resume or restart):
        raise typer.BadParameter("--output, --resume and --restart go with --input FILE (stdin goes to stdout)", param_hint="'--output'")
    if input_file is not None and texts:
        raise typer.BadParameter("give texts or --input FILE, not both", param_hint="'--input'")
    if ray is not None:
        if not ray.strip():
            raise typer.BadParameter("give --ray an address (auto, ray://HOST:10001), or nothing for a local Ray", param_hint="'--ray'")
        if input_file is None or output is None or resume or restart or on_error is OnError.skip or fmt is not OutputFormat.json:
            raise typer.BadParameter("--ray runs a file job: give --input and --output NAME.parquet (no --resume, --restart or --on-error skip)", param_hint="'--ray'")
        from hotswap_cli.encode_file import FileInput, encode_on_ray

        source = FileInput(input_file, text_field, id_field, input_format, on_error.value)
        encode_on_ray(settings.client(), model, source, output, normalize, None if ray == "local" else ray, ray_actors, ray_cpus, prompt)
        return
    if input_file is not None and output is not None:
        if fmt is not OutputFormat.json or follow:
            raise typer.BadParameter("with --output, the output's kind follows its name, and the job is pinned to one version", param_hint="'--format/--follow'")
        from hotswap_cli.encode_file import FileInput, encode_to_file

        source = FileInput(input_file, text_field, id_field, input_format, on_error.value)
        encode_to_file(settings.client(), model, source, output, normalize, resume, key, chunk_size, prompt, restart=restart, dtype=kind)
        return
    out = sys.stdout.buffer
    if fmt is OutputFormat.npy and sys.stdout.isatty():
        raise typer.BadParameter("npy is binary and stdout is a terminal; redirect it: hs encode ... -f npy > vectors.npy", param_hint="'--format'")
    client = settings.client()
    writer: Writer = WRITERS[fmt.value](out, kind)
    if input_file is not None:
        from hotswap_cli.encode_file import FileInput, encode_to_stdout

        source = FileInput(input_file, text_field, id_field, input_format, on_error.value)
        if not encode_to_stdout(client, model, source, writer, normalize, chunk_size, key, not follow, prompt, ranges=calibrated):
            writer.write(_empty_result(client, model))
        writer.finish()
        out.flush()
        return
    if texts and texts != ["-"]:
        from hotswap_cli.waiting import waiting

        # The first encode of a version not loaded yet waits for its load: say on what.
        with waiting(settings, f"encoding with {model or 'the default model'}", (model or "").partition("@")[0] or None):
            result = client.encode(texts, model, normalize=normalize, key=key, prompt=prompt, ranges=calibrated)
        writer.write(result)
        writer.finish()
        out.flush()
        return
    from hotswapd.errors import InvalidText, TextTooLong

    counter = ReadCounter()
    shown = sys.stderr.isatty() and not sys.stdin.isatty()  # no live display over what is typed
    try:
        with StdinProgress(counter, chunk_size, shown) as progress:
            lines = read_lines(sys.stdin.buffer, chunk_size, counter)
            results = client.encode_stream(lines, model, normalize=normalize, key=key, pin=not follow, prompt=prompt, pace=progress.pace, ranges=calibrated)
            rows = 0
            for result in results:
                writer.write(result)
                rows += result.count
                progress.version = f"{result.model}@{result.version}"
        if not rows:
            # Empty input: still say which model and dimension, so a script's (0, dim)
            # array or "dim" field is right.
            writer.write(_empty_result(client, model))
        writer.finish()
    except (InvalidText, TextTooLong) as exc:  # name the line, as the user counts them
        raise type(exc)(exc.message.replace("input text ", "line ", 1), exc.index) from None
    out.flush()


def _empty_result(client: Client, model: str | None) -> EncodeResult:
    """What an empty input is "encoded" as: the version that would have answered, with its
    dimension when it is loaded (an empty input does not load a model; dim 0 otherwise)."""
    name, _, pinned = (model or "").partition("@")
    rows = client.models()
    row = next((r for r in rows if r["name"] == name), None) if name else next((r for r in rows if r.get("default")), None)
    if row is None:
        from hotswapd.errors import UnknownModel

        raise UnknownModel(f"unknown model {name!r}" if name else "no model given and no default model configured")
    version = pinned or row["version"]
    if version not in row.get("versions", [version]):
        from hotswapd.errors import UnknownVersion

        raise UnknownVersion(f"unknown version {row['name']}@{version}; configured: {', '.join(row['versions'])}")
    detail = next((item for item in row.get("version_detail", []) if item["version"] == version), {})
    head = {"dtype": VECTOR_DTYPE, "model": row["name"], "version": version, "fingerprint": detail.get("fingerprint"), "dim": detail.get("dimension") or 0, "count": 0}
    return EncodeResult(head, memoryview(b""))


def _input_size() -> int | None:
    """stdin's size when it is a regular file (``< docs.txt``): the progress bar can then
    show how far it is, and an ETA. A pipe has no size."""
    try:
        info = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


class StdinProgress:
    """On a terminal, the rows answered so far (several times a second: the stream's pieces
    are paced for it), with a bar, rate and ETA when stdin is a file; a summary line at
    the end. Elsewhere nothing, and the stream keeps its full-size pieces."""

    def __init__(self, counter: ReadCounter, chunk_size: int, shown: bool) -> None:
        self._counter, self._chunk_size, self._shown = counter, chunk_size, shown
        self._display: Any = None
        self.pace: Any = None  # a hotswapd.client.pace.Pace while shown
        self.version = "-"

    def __enter__(self) -> StdinProgress:
        if not self._shown:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from hotswapd.client.pace import Pace

        size = _input_size()
        columns = [SpinnerColumn(), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f}/s"), TimeElapsedColumn()]
        if size is not None:
            columns[1:1] = [BarColumn(), TextColumn("{task.percentage:>3.0f}%")]
            columns.append(TimeRemainingColumn())
        self._console = Console(stderr=True)
        self._display = Progress(*columns, console=self._console, transient=True)
        self._display.start()
        task = self._display.add_task("encode", total=100.0 if size is not None else None, rows=0, rate=0.0)
        self._started = time.perf_counter()

        def on_rows(rows: int) -> None:
            self._rows = rows
            done = _fraction_done(rows, self._counter, size)
            rate = rows / max(time.perf_counter() - self._started, 1e-9)
            self._display.update(task, completed=100.0 * done if done is not None else None, rows=rows, rate=rate)

        self._rows = 0
        self.pace = Pace(self._chunk_size, on_rows=on_rows)
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if self._display is None:
            return
        self._display.stop()
        seconds = time.perf_counter() - self._started
        if kind is None and self._rows:
            self._console.print(
                f"encoded {self._rows:,} rows in {seconds:.1f} s ({self._rows / max(seconds, 1e-9):,.0f} rows/s) with {self.version}", highlight=False
            )


def _fraction_done(rows: int, counter: ReadCounter, size: int | None) -> float | None:
    """How far the job is, by rows answered against the rows the input holds: counted
    once it is read to the end, estimated before from the bytes read per line so far."""
    if size is None or not counter.lines:
        return None
    total = counter.lines if counter.ended else counter.lines * size / max(counter.bytes, 1)
    return min(1.0, rows / max(total, 1.0))
