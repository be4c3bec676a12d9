"""``hs index build``: a version's corpus written through the daemon, resumable.

The texts are encoded by exactly the version named (``NAME@VER``: pinned, so a switch
during the build changes nothing) and streamed to disk as they come back, in constant
memory: the reply frames are already the little-endian float32 rows of the matrix.
Every few seconds both files are synced and ``build.progress.json`` records how far they
are good; ``--resume`` cuts whatever a kill left after that point and goes on from the
next input row, so no row is lost or written twice. The manifest is written last and
atomically: until then the directory is not a corpus (the daemon refuses it).
"""

from __future__ import annotations

import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hotswapd.client import Client
from hotswapd.corpus.layout import (
    FORMAT,
    MANIFEST,
    MATRIX,
    NPY_HEADER_BYTES,
    OFFSETS,
    PROGRESS,
    ROWS,
    CorpusError,
    Manifest,
    now,
    npy_header,
    row_line,
    sync_directory,
    write_atomically,
    write_manifest,
)
from hotswapd.files.readers import Row

CHUNK = 256  # texts per request
CHECKPOINT_SECONDS = 2.0


@dataclass
class BuildResult:
    output: Path
    rows: int
    resumed_from: int
    seconds: float
    model: str
    version: str
    fingerprint: str


class _Progress(BaseModel):
    """How far a build's files are good (``build.progress.json``); read back strictly: a
    damaged record is refused, never trusted to cut the files."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    version: str
    fingerprint: str
    weights: str | None
    dim: int = Field(ge=1)
    rows: int = Field(ge=0)
    rows_bytes: int = Field(ge=0)
    keep_texts: bool
    input: dict[str, Any]

    def save(self, output: Path) -> None:
        write_atomically(output / PROGRESS, self.model_dump_json().encode())


def build(
    client: Client,
    version_spec: str,
    rows: Iterable[Row],
    output: Path,
    *,
    input_facts: dict[str, Any],
    keep_texts: bool = True,
    resume: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> BuildResult:
    """Encode ``rows`` with ``version_spec`` (``NAME@VER``) into the corpus at ``output``."""
    if "@" not in version_spec:
        raise CorpusError(f"name the version: {version_spec}@VERSION (a corpus belongs to one version)")
    started = time.perf_counter()
    try:
        return _build(client, version_spec, rows, output, input_facts, keep_texts, resume, on_rows, started)
    except OSError as exc:  # a full disk, a file where the directory should be, no permission
        raise CorpusError(f"{output}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None


def _build(client: Client, version_spec: str, rows: Iterable[Row], output: Path, input_facts: dict[str, Any], keep_texts: bool, resume: bool,
           on_rows: Callable[[int], None] | None, started: float) -> BuildResult:
    state = _resume(output, version_spec, input_facts, keep_texts) if resume else _fresh(output)
    skip = state.rows if state else 0
    matrix = open(output / MATRIX, "r+b" if state else "w+b")  # noqa: SIM115 -- closed in finally
    lines = open(output / ROWS, "r+b" if state else "w+b")  # noqa: SIM115
    created = state is None
    try:
        if state:
            matrix.truncate(NPY_HEADER_BYTES + state.rows * state.dim * 4)  # what a kill left past the checkpoint
            lines.truncate(state.rows_bytes)
            matrix.seek(0, os.SEEK_END)
            lines.seek(0, os.SEEK_END)
        else:
            matrix.write(npy_header((0, 0), "<f4"))  # the real shape is written over it at the end
        state = _stream(client, version_spec, _skipped(rows, skip), matrix, lines, state, keep_texts, input_facts, output, on_rows)
        _finish(output, matrix, lines, state)
    except BaseException:
        # Stopped before its first checkpoint (a refused row, Ctrl-C, an unknown version):
        # nothing worth resuming, and nothing of this build left to block the next one.
        if created and not (output / PROGRESS).exists():
            for name in (MATRIX, ROWS):
                (output / name).unlink(missing_ok=True)
        raise
    finally:
        for handle in (matrix, lines):
            try:
                handle.close()
            except OSError:
                pass  # the error that matters was raised already (a full disk fails the write first)
    return BuildResult(output, state.rows, skip, time.perf_counter() - started, state.model, state.version, state.fingerprint)


def _unstarted(output: Path) -> bool:
    """Only what a build killed before its first checkpoint leaves (no record to resume by)."""
    return {item.name for item in output.iterdir()} <= {MATRIX, ROWS}


def _fresh(output: Path) -> None:
    if (output / MANIFEST).exists():
        raise CorpusError(f"{output} already holds a finished corpus; build into another directory")
    if (output / PROGRESS).exists():
        raise CorpusError(f"{output} holds an interrupted build: add --resume to go on with it, or remove the directory")
    output.mkdir(parents=True, exist_ok=True)
    if not _unstarted(output):
        raise CorpusError(f"{output} is not empty; build into a new directory")


def _resume(output: Path, version_spec: str, input_facts: dict[str, Any], keep_texts: bool) -> _Progress | None:
    if (output / MANIFEST).exists():
        raise CorpusError(f"{output} is already finished: nothing to resume")
    try:
        state = _Progress.model_validate_json((output / PROGRESS).read_bytes()[: 1 << 20])
    except FileNotFoundError:
        if output.is_dir() and _unstarted(output):
            return _fresh(output)  # killed before its first checkpoint: nothing kept, start over
        raise CorpusError(f"{output} has no interrupted build to resume ({PROGRESS} is missing)") from None
    except (ValidationError, OSError) as exc:
        raise CorpusError(f"{output / PROGRESS} is unreadable ({type(exc).__name__}); start the build again in a new directory") from None
    if f"{state.model}@{state.version}" != version_spec:
        raise CorpusError(f"{output} was being built by {state.model}@{state.version}, not {version_spec}")
    if state.input != input_facts:
        raise CorpusError(f"the input changed since the build stopped (it was {state.input}); resume with the same file")
    if state.keep_texts != keep_texts:
        raise CorpusError("resume with the same --texts/--no-texts as the build began with")
    return state


def _skipped(rows: Iterable[Row], count: int) -> Iterator[Row]:
    iterator = iter(rows)
    for _ in range(count):
        if next(iterator, None) is None:
            raise CorpusError(f"the input has fewer rows than the {count} already built")
    return iterator


def _chunks(rows: Iterator[Row], pending: deque[list[Row]]) -> Iterator[list[str]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            pending.append(chunk)
            yield [item.text for item in chunk]
            chunk = []
    if chunk:
        pending.append(chunk)
        yield [item.text for item in chunk]


def _stream(client: Client, version_spec: str, rows: Iterator[Row], matrix: Any, lines: Any, state: _Progress | None, keep_texts: bool,
            input_facts: dict[str, Any], output: Path, on_rows: Callable[[int], None] | None) -> _Progress:
    pending: deque[list[Row]] = deque()
    last_checkpoint = time.monotonic()
    for result in client.encode_stream(_chunks(rows, pending), version_spec, normalize=True):
        chunk = pending.popleft()
        if state is None:
            state = _Progress(model=result.model, version=result.version, fingerprint=result.fingerprint or "",
                              weights=_weights(client, result.model, result.version), dim=result.dim, rows=0, rows_bytes=0,
                              keep_texts=keep_texts, input=input_facts)
        elif result.fingerprint != state.fingerprint or result.dim != state.dim:
            raise CorpusError(
                f"{version_spec} changed during the build (fingerprint {state.fingerprint} -> {result.fingerprint}): "
                "its rows would mix two models; build again in a new directory"
            )
        matrix.write(result.buffer)
        for row in chunk:
            written = lines.write(row_line(row.id, row.text if keep_texts else None))
            state.rows_bytes += written
        state.rows += len(chunk)
        if on_rows is not None:
            on_rows(state.rows)
        if time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
            _checkpoint(output, matrix, lines, state)
            last_checkpoint = time.monotonic()
    if state is None:
        raise CorpusError("the input has no rows")
    return state


def _weights(client: Client, model: str, version: str) -> str | None:
    """The weights digest of the version that answered (loaded: it just encoded)."""
    return client.preload(f"{model}@{version}").get("weights")


def _checkpoint(output: Path, matrix: Any, lines: Any, state: _Progress) -> None:
    """Both files synced first, then the record of how far they are good."""
    for handle in (matrix, lines):
        handle.flush()
        os.fsync(handle.fileno())
    state.save(output)


def _finish(output: Path, matrix: Any, lines: Any, state: _Progress) -> None:
    _checkpoint(output, matrix, lines, state)
    matrix.seek(0)
    matrix.write(npy_header((state.rows, state.dim), "<f4"))
    matrix.flush()
    os.fsync(matrix.fileno())
    _write_offsets(output, lines, state.rows)
    manifest = Manifest(
        format=FORMAT, model=state.model, version=state.version, fingerprint=state.fingerprint, weights=state.weights,
        rows=state.rows, dim=state.dim, normalized=True, texts=state.keep_texts, created=now(),
        builder=f"hotswap {_version()}", input=str(state.input.get("path")),
    )
    write_manifest(output, manifest)  # last: from here on it is a corpus
    (output / PROGRESS).unlink(missing_ok=True)
    sync_directory(output)


def _write_offsets(output: Path, lines: Any, rows: int) -> None:
    """Where each row's line starts in rows.jsonl, found by reading it once."""
    lines.flush()
    lines.seek(0)
    with open(output / OFFSETS, "wb") as handle:
        handle.write(npy_header((rows + 1,), "<i8"))
        position, count, buffer = 0, 0, []
        for line in lines:
            buffer.append(position)
            position += len(line)
            count += 1
            if len(buffer) >= 65536:
                handle.write(struct.pack(f"<{len(buffer)}q", *buffer))
                buffer = []
        buffer.append(position)
        handle.write(struct.pack(f"<{len(buffer)}q", *buffer))
        handle.flush()
        os.fsync(handle.fileno())
    if count != rows:
        raise CorpusError(f"{output / ROWS} has {count} lines for {rows} rows (a text with a raw newline?)")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hotswap")
    except Exception:  # noqa: BLE001 -- not installed as a distribution (a source tree)
        return "unknown"
