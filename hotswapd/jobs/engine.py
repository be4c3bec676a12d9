"""The job engine: rows of a file through one pinned version into a sink, resumable.

Rows go to the daemon in chunks with a window of requests in flight
(``Client.encode_stream``) and come back in input order; the sink writes each chunk as it
arrives, so memory stays bounded by the window whatever the file's size. The version that
answers the first chunk (or the one named ``NAME@VER``) encodes every row: a switch during
the job changes nothing, and a version whose fingerprint changes under the job stops it.

Every ``sink.checkpoint_seconds`` the sink's files and the rejects file are synced, then a
record (``job_record.py``) says how many input rows they hold. ``resume`` cuts what a kill
left past the record and goes on from the next input row: no row lost or written twice.

Bad rows: the reader names them (``RowRejected``); the daemon may refuse a text too (too
long for ``long_text = "error"``, too many bytes). With ``on_error="fail"`` the first one
stops the job naming its row and id; with ``"skip"`` each is written to the rejects file
(one JSON object per line: row, id, reason) and the job goes on.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from hotswapd.client.connection import Client
from hotswapd.client.encode_result import EncodeResult
from hotswapd.client.pace import Pace
from hotswapd.errors import InvalidText, TextTooLong
from hotswapd.files.readers import Rejected, Row
from hotswapd.jobs.job_record import START_OVER, JobError, JobRecord, read_record, save_record
from hotswapd.host.safefiles import sync_directory

# Texts per request: the daemon sorts each request by true token counts before cutting it
# into batches, so a larger request pads less (8,000 BBC sentences in the client's sort
# windows of 2,048: 96.5 % useful tokens in requests of 256, 97.9 % in requests of 512);
# 4 in flight are one sort window.
CHUNK = 512


class Sink(Protocol):
    checkpoint_seconds: float

    def begin(self, record: JobRecord, resumed: bool) -> None:
        """Open the files: new ones, or (resumed) the old ones cut to what ``record`` holds."""

    def write(self, rows: Sequence[Row], result: EncodeResult) -> None: ...

    def sync(self) -> dict[str, Any]:
        """Make everything written durable; returns the sink's part of the record."""

    def finish(self, record: JobRecord) -> None:
        """After the last checkpoint: make the output whole (headers, merges, manifests)."""

    def discard(self) -> None:
        """A fresh job stopped before its first checkpoint: remove what it wrote."""

    def close(self) -> None: ...


@dataclass
class JobResult:
    rows: int
    rejected: int
    resumed_from: int  # rows already written when this run began
    seconds: float
    model: str
    version: str
    fingerprint: str


@dataclass
class _Chunk:
    rows: list[Row] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)  # those among (before) its rows


@dataclass
class Job:
    """One run of a job: what it reads, how it may fail, where it keeps its record."""

    client: Client
    version: str | None  # NAME, NAME@VER, or None for the default model
    sink: Sink
    record_path: Path
    rejects_path: Path | None  # None: bad rows always fail the job
    input_facts: dict[str, Any]
    settings: dict[str, Any]
    normalize: bool | None = None
    key: str | None = None  # a rollout's sticky key: the job lands where this key lands
    prompt: str | None = None  # one of the version's prompts by name, for every row
    skip_bad_rows: bool = False
    on_rows: Callable[[int], None] | None = None
    chunk_size: int = CHUNK
    pace: Pace | None = None  # a progress display's: hears of each answer, sizes the pieces
    ranges: bool = False  # the version's int8/uint8 calibration comes with the rows (compact output)
    before_finish: Callable[[], None] | None = None  # a last check before the output is made whole

    def run(self, items: Iterable[Row | Rejected], resume: bool = False) -> JobResult:
        started = time.perf_counter()
        record = self._resumed_record() if resume else None
        spec = f"{record.model}@{record.version}" if record else self.version
        resumed_from = record.rows if record else 0
        rejects = self._open_rejects(record)
        checkpointed = record is not None
        try:
            if record is not None:
                self.sink.begin(record, resumed=True)
            iterator = _skipped(iter(items), record.consumed if record else 0)
            record = _Stream(self, spec, iterator, record, rejects).run()
            checkpointed = True
            if self.before_finish is not None:
                self.before_finish()
            self.sink.finish(record)
            self.record_path.unlink(missing_ok=True)
            sync_directory(self.record_path.parent)
        except BaseException:
            if not checkpointed and not self.record_path.exists():
                self.sink.discard()  # nothing worth resuming, and nothing left to block the next run
                if rejects is not None:
                    Path(rejects.name).unlink(missing_ok=True)
            raise
        finally:
            self.sink.close()
            if rejects is not None:
                rejects.close()
        return JobResult(record.rows, record.rejected, resumed_from, time.perf_counter() - started, record.model, record.version, record.fingerprint)

    def _resumed_record(self) -> JobRecord:
        try:
            record = read_record(self.record_path)
        except FileNotFoundError:
            raise JobError(f"there is no interrupted job to resume ({self.record_path} is missing)") from None
        name, _, version = (self.version or "").partition("@")
        if (name and name != record.model) or (version and version != record.version):
            raise JobError(f"the interrupted job was encoding with {record.model}@{record.version}, not {self.version}")
        if record.input != self.input_facts:
            raise JobError(f"the input changed since the job stopped (it was {record.input}); resume with the same file")
        if record.settings != self.settings:
            raise JobError(f"resume with the same options as the job began with ({record.settings})")
        # Before any row is read or encoded: a version whose files or options changed since
        # would write rows of another model after the old ones.
        spec = f"{record.model}@{record.version}"
        now = self.client.preload(spec).get("fingerprint")
        if now != record.fingerprint:
            raise JobError(f"{spec} changed since the job stopped (fingerprint {record.fingerprint} -> {now}): resumed, its rows would mix two models; {START_OVER}")
        return record

    def _open_rejects(self, record: JobRecord | None) -> BinaryIO | None:
        if self.rejects_path is None:
            return None
        if record is None:
            return open(self.rejects_path, "w+b")  # closed by run()
        handle = open(self.rejects_path, "r+b") if self.rejects_path.exists() else open(self.rejects_path, "w+b")  # noqa: SIM115
        handle.truncate(record.rejects_bytes)
        handle.seek(0, os.SEEK_END)
        return handle


class _Stream:
    """The loop of one run: chunks out, answers in, in order; checkpoints on the way."""

    def __init__(self, job: Job, spec: str | None, rows: Iterator[Row | Rejected], record: JobRecord | None, rejects: BinaryIO | None) -> None:
        self.job, self.spec, self.rows, self.record, self.rejects = job, spec, rows, record, rejects
        self.pending: deque[_Chunk] = deque()  # sent (or about to be), not yet written
        self.again: deque[_Chunk] = deque()  # to send again after a refused text was taken out
        self.last_checkpoint = time.monotonic()
        self._early_rejects = 0  # rejects before the first answer (no record yet to count them in)
        self._first_reason = ""

    def run(self) -> JobRecord:
        while True:
            received = 0
            try:
                for result in self.job.client.encode_stream(self._texts(), self.spec, normalize=self.job.normalize, key=self.job.key, pin=True, prompt=self.job.prompt,
                                                             pace=self.job.pace, ranges=self.job.ranges):
                    chunk = self.pending.popleft()
                    received += len(chunk.rows)
                    self._write(chunk, result)
            except (InvalidText, TextTooLong) as exc:
                self._refused(exc, received)
                continue
            break
        while self.pending:  # only rejects after the last row
            self._write(self.pending.popleft(), None)
        if self.record is None or self.record.rows == 0:
            raise JobError(f"the input has no rows to encode{self._rejected_note()}")
        # No checkpoint here: the sink's finish makes the output durable itself, and a kill
        # during it resumes from the last checkpoint (the rows since are encoded again).
        # A last one would sync every file twice (a parquet tail written as a part, then
        # copied), which on a short job is a tenth of its time.
        if self.rejects is not None:
            self.rejects.flush()
            os.fsync(self.rejects.fileno())
        return self.record

    def _texts(self) -> Iterator[list[str]]:
        while True:
            chunk = self.again.popleft() if self.again else self._next_chunk()
            if chunk is None:
                return
            self.pending.append(chunk)
            if not chunk.rows:
                return  # rejects only: the input ended
            yield [row.text for row in chunk.rows]

    def _next_chunk(self) -> _Chunk | None:
        chunk = _Chunk()
        for item in self.rows:
            if isinstance(item, Rejected):
                chunk.rejects.append(item)
                continue
            chunk.rows.append(item)
            if len(chunk.rows) == self.job.chunk_size:
                return chunk
        return chunk if chunk.rows or chunk.rejects else None

    def _refused(self, exc: InvalidText | TextTooLong, received: int) -> None:
        """The daemon refused one text of the chunks in flight: fail naming its row, or take
        it out as a reject and send the rest again, in order."""
        if exc.index is None:
            raise exc
        offset = exc.index - received
        place = None
        for number, item in enumerate(self.pending):
            if 0 <= offset < len(item.rows):
                place = number
                break
            offset -= len(item.rows)
        if place is None:
            raise exc
        chunk = self.pending[place]
        bad = chunk.rows[offset]
        reason = re.sub(r"^(input )?text \d+:?\s*", "", exc.message)
        if not self.job.skip_bad_rows:
            raise JobError(f"row {bad.number}{_id_note(bad.number, bad.id)}: {reason}") from None
        del chunk.rows[offset]
        chunk.rejects.append(Rejected(bad.number, bad.id, reason))
        if self.record is not None:
            self.spec = f"{self.record.model}@{self.record.version}"  # stay on the pinned version
        if not chunk.rows:  # nothing left to send: its rejects go with the chunk before it, or now
            del self.pending[place]
            if place == 0:
                self._write(chunk, None)
            else:
                self.pending[place - 1].rejects.extend(chunk.rejects)
        self.again.extendleft(reversed(self.pending))
        self.pending.clear()

    def _write(self, chunk: _Chunk, result: EncodeResult | None) -> None:
        if chunk.rejects:
            if self.rejects is None:
                first = chunk.rejects[0]
                raise JobError(f"row {first.number}{_id_note(first.number, first.id)}: {first.reason}")
            self._first_reason = self._first_reason or chunk.rejects[0].reason
            self.rejects.write(b"".join(_reject_line(item) for item in sorted(chunk.rejects, key=lambda item: item.number)))
        if result is not None:
            self._check_version(result)
            assert self.record is not None
            self.job.sink.write(chunk.rows, result)
            self.record.rows += len(chunk.rows)
        if self.record is not None:
            self.record.rejected += len(chunk.rejects)
        else:
            self._early_rejects += len(chunk.rejects)
        if self.job.on_rows is not None and self.record is not None:
            self.job.on_rows(self.record.rows)
        if time.monotonic() - self.last_checkpoint >= self.job.sink.checkpoint_seconds and self.record is not None:
            self._checkpoint()

    def _check_version(self, result: EncodeResult) -> None:
        if self.record is None:
            weights = self.job.client.preload(f"{result.model}@{result.version}").get("weights")
            self.record = JobRecord(
                model=result.model, version=result.version, fingerprint=result.fingerprint or "", weights=weights,
                dim=result.dim, rows=0, rejected=self._early_rejects, rejects_bytes=0,
                input=self.job.input_facts, settings=self.job.settings, sink={},
            )
            self.spec = f"{result.model}@{result.version}"
            self.job.sink.begin(self.record, resumed=False)
        elif result.fingerprint != self.record.fingerprint or result.dim != self.record.dim:
            raise JobError(
                f"{self.record.model}@{self.record.version} changed during the job (fingerprint {self.record.fingerprint} -> "
                f"{result.fingerprint}): its rows would mix two models; {START_OVER}"
            )

    def _checkpoint(self) -> None:
        assert self.record is not None
        if self.rejects is not None:
            self.rejects.flush()
            os.fsync(self.rejects.fileno())
            self.record.rejects_bytes = self.rejects.tell()
        self.record.sink = self.job.sink.sync()
        save_record(self.job.record_path, self.record)
        self.last_checkpoint = time.monotonic()

    def _rejected_note(self) -> str:
        rejected = self.record.rejected if self.record else self._early_rejects
        return f" ({rejected:,} rows rejected, the first for: {self._first_reason})" if rejected else ""


def _skipped(rows: Iterator[Row | Rejected], count: int) -> Iterator[Row | Rejected]:
    for _ in range(count):
        if next(rows, None) is None:
            raise JobError(f"the input has fewer rows than the {count:,} the job already took")
    return rows


def _id_note(number: int, row_id: Any) -> str:
    return f" (id {row_id!r})" if row_id not in (None, number) else ""


def _reject_line(item: Rejected) -> bytes:
    return json.dumps({"row": item.number, "id": item.id, "reason": item.reason}, ensure_ascii=False).encode() + b"\n"
