"""``hs encode --input FILE``: a data file's rows, to a file (resumable) or to stdout."""

import sys
from dataclasses import dataclass
from pathlib import Path

from hotswap_cli.formats import Writer
from hotswap_cli.progress import RowProgress

from hotswapd.client.connection import Client


@dataclass(frozen=True)
class FileInput:
    path: Path
    text_field: str
    id_field: str | None
    input_format: str | None
    on_error: str


def encode_to_file(
    client: Client, model: str | None, source: FileInput, output: Path, normalize: bool | None, resume: bool, key: str | None, chunk_size: int, prompt: str | None = None,
    *, restart: bool = False, dtype: str = "float32",
) -> None:
    from hotswapd.jobs.file_job import encode_file

    reader = _reader(source)
    with RowProgress(reader) as progress:
        done = encode_file(client, model, reader, output, normalize=normalize, resume=resume, on_rows=progress.on_rows, key=key, chunk_size=chunk_size, prompt=prompt,
                           restart=restart, pace=progress.pace, dtype=dtype)
    new = done.rows - done.resumed_from
    resumed = f" (resumed after {done.resumed_from:,})" if done.resumed_from else ""
    rejected = f", {done.rejected:,} rejected (see {done.rejects})" if done.rejected else ""
    sys.stderr.write(
        f"encoded {done.rows:,} rows{resumed}{rejected} into {output}: {new:,} in {done.seconds:.1f} s "
        f"({new / max(done.seconds, 1e-9):,.0f} rows/s) with {done.model}@{done.version} ({done.fingerprint})\n"
    )


def encode_on_ray(client: Client, model: str | None, source: FileInput, output: Path, normalize: bool | None, address: str | None, actors: int, cpus: float,
                  prompt: str | None = None) -> None:
    from hotswapd.jobs.ray_job import RaySettings, encode_file_on_ray

    settings = RaySettings(address=address, actors=actors, cpus_per_actor=cpus)
    done = encode_file_on_ray(client, model, source.path, output, text_field=source.text_field, id_field=source.id_field,
                              input_format=source.input_format, normalize=normalize, settings=settings, prompt=prompt)
    where = address or "a local Ray"
    sys.stderr.write(
        f"encoded {done.rows:,} rows into {output} on {where} ({done.actors} actor{'s' if done.actors > 1 else ''}): "
        f"{done.seconds:.1f} s ({done.rows / max(done.seconds, 1e-9):,.0f} rows/s) with {done.model}@{done.version} ({done.fingerprint})\n"
    )


def encode_to_stdout(client: Client, model: str | None, source: FileInput, writer: Writer, normalize: bool | None, chunk_size: int, key: str | None, pin: bool, prompt: str | None = None,
                     *, ranges: bool = False) -> int:
    """Rows of the file through the stdout writers (-f json|jsonl|npy); returns the rows.
    Nothing to resume here: a job that must survive a kill names an --output."""
    from collections import deque

    from hotswapd.errors import InvalidText, TextTooLong

    if source.on_error != "fail":
        raise _usage("--on-error skip writes the rejected rows beside the output: give --output")
    reader = _reader(source)
    numbers: deque[list[int]] = deque()  # the row numbers of the chunks in flight (the stream bounds them), to name a refused text

    def chunks():  # type: ignore[no-untyped-def]
        chunk: list[str] = []
        for row in reader:  # with on_error="fail" the reader raises on a bad row: all are Rows
            if not chunk:
                numbers.append([])
            chunk.append(row.text)  # type: ignore[union-attr]
            numbers[-1].append(row.number)
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    rows = 0
    try:
        for result in client.encode_stream(chunks(), model, normalize=normalize, key=key, pin=pin, prompt=prompt, ranges=ranges):
            writer.write(result)
            rows += result.count
            numbers.popleft()
    except (InvalidText, TextTooLong) as exc:
        if exc.index is None:
            raise
        flat = [number for chunk_numbers in numbers for number in chunk_numbers]
        offset = exc.index - rows
        if not 0 <= offset < len(flat):
            raise
        reason = exc.message.split(": ", 1)[-1]
        raise type(exc)(f"row {flat[offset]}: {reason}", exc.index) from None
    return rows


def _reader(source: FileInput):  # type: ignore[no-untyped-def]
    from hotswapd.files.readers import RowReader, detect_format

    return RowReader(source.path, detect_format(source.path, source.input_format), source.text_field, source.id_field, source.on_error)


def _usage(message: str) -> Exception:
    import typer

    return typer.BadParameter(message)
