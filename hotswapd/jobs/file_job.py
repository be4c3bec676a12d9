"""``hs encode --input FILE --output FILE``: a file's rows into a file of embeddings.

The output's kind follows its name: ``.parquet`` (the id column and ``embedding``), ``.npy``
(with ``NAME.ids.jsonl`` beside it, one {"id"} per row), or ``.jsonl`` (one object per
row). While the job runs everything lives in ``OUTPUT.partial/`` (the sink's files, the
checkpoint record, the rejects); the finished files are renamed into place at the end, so
``OUTPUT`` is never half written. Rejected rows end in ``NAME.rejects.jsonl``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswapd.client.connection import Client
from hotswapd.client.pace import Pace
from hotswapd.wire.compact import CALIBRATED
from hotswapd.files.readers import RowReader
from hotswapd.jobs.engine import CHUNK, Job, JobResult, Sink
from hotswapd.jobs.parquet_sink import PART_PREFIX, ParquetSink
from hotswapd.jobs.job_record import JobError, JobRecord
from hotswapd.jobs.sinks import JsonlSink, MatrixSink
from hotswapd.jobs.output_lock import only_job
from hotswapd.host.safefiles import sync_directory

OUTPUT_KINDS = {".parquet": "parquet", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RECORD = "job.json"
REJECTS = "rejects.jsonl"
# Everything a job puts in its work directory (and nothing else is removed from it).
_WORK_FILES = (RECORD, REJECTS, "embeddings.npy", "ids.jsonl", "embeddings.jsonl", "merged.parquet")


@dataclass(frozen=True)
class FileJobPaths:
    output: Path
    kind: str

    @classmethod
    def of(cls, output: Path) -> FileJobPaths:
        kind = OUTPUT_KINDS.get(output.suffix.lower())
        if kind is None:
            raise JobError(f"cannot tell what to write from the name {output.name}: end it in .parquet, .npy or .jsonl")
        return cls(output, kind)

    @property
    def work(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")

    @property
    def rejects(self) -> Path:
        return self.output.with_suffix(".rejects.jsonl")

    @property
    def ids(self) -> Path:
        return self.output.with_suffix(".ids.jsonl")


@dataclass
class FileJobResult(JobResult):
    output: Path = Path()
    rejects: Path | None = None
    ids: Path | None = None


def encode_file(
    client: Client,
    model: str | None,
    reader: RowReader,
    output: Path,
    *,
    normalize: bool | None = None,
    resume: bool = False,
    on_rows: Callable[[int], None] | None = None,
    key: str | None = None,
    chunk_size: int = CHUNK,
    prompt: str | None = None,
    restart: bool = False,
    pace: Pace | None = None,
    dtype: str = "float32",
) -> FileJobResult:
    """Encode every row ``reader`` gives into ``output``; ``resume`` goes on with an
    interrupted job of the same input and output, ``restart`` discards it and starts over."""
    if resume and restart:
        raise JobError("--resume goes on with the interrupted job, --restart discards it: give one")
    paths = FileJobPaths.of(output)
    try:
        with only_job(paths.output):
            if restart and paths.work.exists():
                _clear(paths.work)  # only what a job writes; anything else there stays, and is said
            return _encode_file(client, model, reader, paths, normalize, resume, on_rows, key, chunk_size, prompt, pace, dtype)
    except OSError as exc:  # a full disk, no permission, a directory where a file should be
        raise JobError(f"{output}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None


def _encode_file(client: Client, model: str | None, reader: RowReader, paths: FileJobPaths, normalize: bool | None, resume: bool,
                 on_rows: Callable[[int], None] | None, key: str | None, chunk_size: int, prompt: str | None, pace: Pace | None,
                 dtype: str = "float32") -> FileJobResult:
    _check_targets(paths, reader)
    resume = _prepare(paths, resume)
    sink = _Published(_sink(paths, reader, dtype), _moves(paths))
    facts = input_facts(reader)
    settings = {"normalize": normalize, "output": paths.kind, "text_field": reader.text_field, "id_field": reader.id_field,
                "on_error": "skip" if reader.skip_bad_rows else "fail", **({"prompt": prompt} if prompt else {}),
                **({"dtype": dtype} if dtype != "float32" else {})}
    job = Job(client, model, sink, paths.work / RECORD, paths.work / REJECTS, facts, settings, normalize=normalize, key=key, prompt=prompt,
              skip_bad_rows=reader.skip_bad_rows, on_rows=on_rows, chunk_size=chunk_size, pace=pace, ranges=dtype in CALIBRATED, before_finish=lambda: _unchanged(reader, facts))
    try:
        done = job.run(reader, resume)
    except BaseException:
        if not (paths.work / RECORD).exists():
            _clear(paths.work)  # stopped before its first checkpoint: nothing to resume, nothing left
        raise
    try:
        _clear(paths.work)
    except JobError:
        pass  # someone else's files in it: the job is done all the same, and they stay
    return FileJobResult(**vars(done), output=paths.output, rejects=paths.rejects if done.rejected else None,
                         ids=paths.ids if paths.kind == "npy" else None)


def input_facts(reader: RowReader) -> dict[str, Any]:
    """What says the input is the same file on resume."""
    stat = reader.path.stat()
    return {"path": str(reader.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": reader.format}


def _unchanged(reader: RowReader, facts: dict[str, Any]) -> None:
    """Before the output is published: a file rewritten or cut while it was read gave rows
    of two files, or too few."""
    if input_facts(reader) != facts:
        raise JobError(f"{reader.path} changed while the job read it (size or modification time); run it again")


def _check_targets(paths: FileJobPaths, reader: RowReader) -> None:
    """Refuse what would overwrite the input or cannot be published at the end."""
    source = reader.path.resolve()
    targets = [paths.output, paths.rejects] + ([paths.ids] if paths.kind == "npy" else [])
    for target in targets:
        if target.resolve() == source:
            raise JobError(f"{target} is the input file; write the output elsewhere")
        if target.is_dir():
            raise JobError(f"{target} is a directory; the job would write a file there")
    if paths.kind == "parquet" and (reader.id_field or "id") == "embedding":
        raise JobError("the id column cannot be called 'embedding' in a parquet output (that is the vectors' column); rename it")


def _sink(paths: FileJobPaths, reader: RowReader, dtype: str = "float32") -> Sink:
    if paths.kind == "parquet":
        return ParquetSink(paths.work, paths.output, reader.id_field or "id", dtype)
    if paths.kind == "npy":
        return MatrixSink(paths.work / "embeddings.npy", paths.work / "ids.jsonl", dtype=dtype)
    return JsonlSink(paths.work / "embeddings.jsonl", dtype)


def _moves(paths: FileJobPaths) -> list[tuple[Path, Path]]:
    """Work files to their places, the output itself last (the sink renames a parquet
    output into place itself, before these)."""
    moves = [(paths.work / REJECTS, paths.rejects)]
    if paths.kind == "npy":
        moves += [(paths.work / "ids.jsonl", paths.ids), (paths.work / "embeddings.npy", paths.output)]
    elif paths.kind == "jsonl":
        moves.append((paths.work / "embeddings.jsonl", paths.output))
    return moves


class _Published:
    """A sink whose finished files are renamed from the work directory into place."""

    def __init__(self, inner: Sink, moves: list[tuple[Path, Path]]) -> None:
        self.inner, self.moves = inner, moves
        self.checkpoint_seconds = inner.checkpoint_seconds

    def begin(self, record: JobRecord, resumed: bool) -> None:
        self.inner.begin(record, resumed)

    def write(self, rows: Any, result: Any) -> None:
        self.inner.write(rows, result)

    def sync(self) -> dict[str, Any]:
        return self.inner.sync()

    def finish(self, record: JobRecord) -> None:
        self.inner.finish(record)
        for source, target in self.moves:
            if source.name == REJECTS and record.rejected == 0:
                continue  # nothing rejected: no rejects file (and a file of that name is left alone)
            os.replace(source, target)
        sync_directory(self.moves[0][1].parent)

    def discard(self) -> None:
        self.inner.discard()

    def close(self) -> None:
        self.inner.close()


def _prepare(paths: FileJobPaths, resume: bool) -> bool:
    """Whether there is an interrupted job to resume; refuses what would lose work."""
    record = paths.work / RECORD
    if resume:
        if record.exists():
            return True
        if not paths.work.exists() and paths.output.exists():
            raise JobError(f"{paths.output} is finished: there is nothing to resume")
        # Stopped before its first checkpoint (Ctrl-C, kill -9), or never started: nothing
        # was kept, so going on is starting.
    elif record.exists():
        raise JobError(f"{paths.work} holds an interrupted job: add --resume to go on with it, or --restart to discard it and start over")
    if paths.work.exists():
        _clear(paths.work)
    paths.work.mkdir(parents=True)
    return False


def _clear(work: Path) -> None:
    """Remove a work directory holding only what a job writes there."""
    if not work.is_dir() or work.is_symlink():
        raise JobError(f"{work} is in the way (not a job's work directory); move it")
    for item in work.iterdir():
        if item.name in _WORK_FILES or (item.name.startswith(PART_PREFIX) and item.suffix == ".parquet") or item.name.endswith(".partial"):
            item.unlink()
    try:
        work.rmdir()
    except OSError:
        raise JobError(f"{work} holds files no job wrote; move them to go on") from None
