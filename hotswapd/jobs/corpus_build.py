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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswapd.client.connection import Client
from hotswapd.client.pace import Pace
from hotswapd.corpus.files import (
    FORMAT,
    MANIFEST,
    MATRIX,
    OFFSETS,
    PROGRESS,
    ROWS,
    CorpusError,
    Manifest,
    now,
    npy_header,
    write_manifest,
)
from hotswapd.files.readers import Rejected, Row
from hotswapd.jobs.output_lock import only_job
from hotswapd.jobs.engine import Job
from hotswapd.jobs.job_record import JobError, JobRecord
from hotswapd.jobs.sinks import MatrixSink


@dataclass
class BuildResult:
    output: Path
    rows: int
    resumed_from: int
    seconds: float
    model: str
    version: str
    fingerprint: str


def build(
    client: Client,
    version_spec: str,
    rows: Iterable[Row | Rejected],
    output: Path,
    *,
    input_facts: dict[str, Any],
    keep_texts: bool = True,
    resume: bool = False,
    on_rows: Callable[[int], None] | None = None,
    restart: bool = False,
    pace: Pace | None = None,
) -> BuildResult:
    """Encode ``rows`` with ``version_spec`` (``NAME@VER``) into the corpus at ``output``;
    ``resume`` goes on with an interrupted build there, ``restart`` discards it first."""
    if "@" not in version_spec:
        raise CorpusError(f"name the version: {version_spec}@VERSION (a corpus belongs to one version)")
    if resume and restart:
        raise CorpusError("--resume goes on with the interrupted build, --restart discards it: give one")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with only_job(output, "wait for it, or stop it and --resume"):  # a second build would clear the first's files
            if restart:
                _discard_build(output)
            resume = resume and _resumable(output)
            if not resume:
                _fresh(output)
            job = Job(client, version_spec, _CorpusSink(output, keep_texts), output / PROGRESS, None, input_facts,
                      {"keep_texts": keep_texts}, normalize=True, on_rows=on_rows, pace=pace)
            done = job.run(rows, resume)
    except JobError as exc:
        raise CorpusError(_in_corpus_terms(exc.message)) from None
    except OSError as exc:  # a full disk, a file where the directory should be, no permission
        raise CorpusError(f"{output}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None
    return BuildResult(output, done.rows, done.resumed_from, done.seconds, done.model, done.version, done.fingerprint)


def _in_corpus_terms(message: str) -> str:
    return message.replace("resume with the same options as the job began with", "resume with the same --texts/--no-texts as the build began with")


class _CorpusSink(MatrixSink):
    """The matrix and rows.jsonl, then at the end the offsets and, last, the manifest."""

    def __init__(self, output: Path, keep_texts: bool) -> None:
        super().__init__(output / MATRIX, output / ROWS, keep_texts)
        self.output = output

    def finish(self, record: JobRecord) -> None:
        super().finish(record)
        _write_offsets(self.output, self.handles[1], record.rows)
        manifest = Manifest(
            format=FORMAT, model=record.model, version=record.version, fingerprint=record.fingerprint, weights=record.weights,
            rows=record.rows, dim=record.dim, normalized=True, texts=self.keep_texts, created=now(),
            builder=f"hotswap {_version()}", input=str(record.input.get("path")),
        )
        write_manifest(self.output, manifest)  # last: from here on it is a corpus


def _unstarted(output: Path) -> bool:
    """Only what a build killed before its first checkpoint leaves (no record to resume by)."""
    return {item.name for item in output.iterdir()} <= {MATRIX, ROWS}


def _fresh(output: Path) -> None:
    if (output / MANIFEST).exists():
        raise CorpusError(f"{output} already holds a finished corpus; build into another directory")
    if (output / PROGRESS).exists():
        raise CorpusError(f"{output} holds an interrupted build: add --resume to go on with it, or --restart to discard it and start over")
    output.mkdir(parents=True, exist_ok=True)
    if not _unstarted(output):
        raise CorpusError(f"{output} is not empty; build into a new directory")


def _discard_build(output: Path) -> None:
    """An interrupted build's files removed (only those a build writes), for --restart."""
    if not output.is_dir():
        return
    if (output / MANIFEST).exists():
        raise CorpusError(f"{output} holds a finished corpus; --restart discards only an interrupted build: build into another directory")
    build_files = {PROGRESS, MATRIX, ROWS, OFFSETS}
    others = sorted(item.name for item in output.iterdir() if item.name not in build_files)
    if others:  # nothing is removed from a directory that is not only a build's
        raise CorpusError(f"{output} holds files no build wrote ({', '.join(others[:5])}); --restart removes nothing there: build into a new directory")
    for name in build_files:
        (output / name).unlink(missing_ok=True)


def _resumable(output: Path) -> bool:
    """True when there is a record to resume by; False when a kill came before the first
    checkpoint (nothing kept: start over)."""
    if (output / MANIFEST).exists():
        raise CorpusError(f"{output} is already finished: nothing to resume")
    if (output / PROGRESS).exists():
        return True
    if output.is_dir() and _unstarted(output):
        return False
    raise CorpusError(f"{output} has no interrupted build to resume ({PROGRESS} is missing)")


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
