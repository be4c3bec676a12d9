"""Sinks that append to plain files: a .npy matrix with an ids file beside it, and .jsonl.

Both write the daemon's reply frames as they come (little-endian float32 rows, the .npy
layout already) and record how many bytes are good at each checkpoint; a resumed job cuts
each file back to that and appends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from hotswapd.client.encode_result import EncodeResult
from hotswapd.corpus.files import NPY_HEADER_BYTES, npy_header, row_line  # an ids file is a corpus's rows.jsonl
from hotswapd.files.readers import Row
from hotswapd.jobs.job_record import START_OVER, JobError, JobRecord

CHECKPOINT_SECONDS = 2.0


class CompactRows:
    """A job's rows in its output type (hotswapd.wire.compact): float32 as the wire has
    them, or the compact type; int8/uint8 rows all cut with one calibration, whose
    fingerprint the job's record keeps (a resume that meets another is refused)."""

    def __init__(self, dtype: str = "float32") -> None:
        self.dtype = dtype
        self.calibration: str | None = None

    def width(self, dim: int) -> int:
        from hotswapd.wire.compact import row_length

        return row_length(self.dtype, dim)

    @property
    def descr(self) -> str:
        from hotswapd.wire.compact import numpy_dtype

        return numpy_dtype(self.dtype)

    def resume(self, state: dict[str, Any]) -> None:
        self.calibration = state.get("calibration")

    def state(self) -> dict[str, Any]:
        return {"calibration": self.calibration} if self.calibration else {}

    def array(self, result: EncodeResult) -> Any:
        """The rows as numpy in the output type (float32: a view of the reply frame)."""
        if self.dtype == "float32":
            return result.embeddings
        if result.calibration is not None:
            if self.calibration is not None and result.calibration != self.calibration:
                raise JobError(f"the version's int8 calibration changed ({self.calibration} -> {result.calibration}); {START_OVER}")
            self.calibration = result.calibration
        return result.compact(self.dtype)

    def frame(self, result: EncodeResult) -> bytes | memoryview:
        return result.buffer if self.dtype == "float32" else self.array(result).tobytes()

    def json_rows(self, result: EncodeResult) -> list[bytes]:
        if self.dtype == "float32":
            return result.json_rows()
        return [json.dumps(row).encode() for row in self.array(result).tolist()]


class _AppendedFiles:
    """Files appended to, cut back to their recorded sizes on resume."""

    checkpoint_seconds = CHECKPOINT_SECONDS

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.handles: list[BinaryIO] = []

    def _open(self, sizes: Sequence[Any] | None) -> list[BinaryIO]:
        for index, path in enumerate(self.paths):
            handle = open(path, "r+b" if sizes is not None else "w+b")  # noqa: SIM115 -- closed by close()
            self.handles.append(handle)
            if sizes is not None:
                size = sizes[index]
                # The files hold at least what the record says (they were synced first); a
                # record that says more, or not a size, describes other files.
                if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= os.fstat(handle.fileno()).st_size:
                    raise JobError(f"{path} does not hold what the job's record says ({size!r} bytes); {START_OVER}")
                handle.truncate(size)  # what a kill left past the checkpoint
                handle.seek(0, os.SEEK_END)
        return self.handles

    def _sync(self) -> list[int]:
        for handle in self.handles:
            handle.flush()
            os.fsync(handle.fileno())
        return [handle.tell() for handle in self.handles]

    def discard(self) -> None:
        self.close()
        for path in self.paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        for handle in self.handles:
            try:
                handle.close()
            except OSError:
                pass  # the error that matters was raised already (a full disk fails the write first)
        self.handles = []


class MatrixSink(_AppendedFiles):
    """``matrix``: a .npy of rows x dim float32; ``lines``: one {"id"[, "text"]} per row."""

    def __init__(self, matrix: Path, lines: Path, keep_texts: bool = False, dtype: str = "float32") -> None:
        super().__init__(matrix, lines)
        self.keep_texts = keep_texts
        self.out = CompactRows(dtype)

    def begin(self, record: JobRecord, resumed: bool) -> None:
        item = 4 if self.out.dtype == "float32" else (2 if self.out.dtype == "float16" else 1)
        sizes = [NPY_HEADER_BYTES + record.rows * self.out.width(record.dim) * item, record.sink.get("lines_bytes")] if resumed else None
        matrix, _ = self._open(sizes)
        if resumed:
            self.out.resume(record.sink)
        else:
            matrix.write(npy_header((0, 0), self.out.descr))  # the real shape is written over it at the end

    def write(self, rows: Sequence[Row], result: EncodeResult) -> None:
        matrix, lines = self.handles
        matrix.write(self.out.frame(result))
        lines.write(b"".join(row_line(row.id, row.text if self.keep_texts else None) for row in rows))

    def sync(self) -> dict[str, Any]:
        return {"lines_bytes": self._sync()[1], **self.out.state()}

    def finish(self, record: JobRecord) -> None:
        matrix = self.handles[0]
        matrix.seek(0)
        matrix.write(npy_header((record.rows, self.out.width(record.dim)), self.out.descr))
        self._sync()


class JsonlSink(_AppendedFiles):
    """One object per row: {"id", "model", "version", "fingerprint", "embedding"}."""

    def __init__(self, path: Path, dtype: str = "float32") -> None:
        super().__init__(path)
        self._prefix = ""
        self.out = CompactRows(dtype)

    def begin(self, record: JobRecord, resumed: bool) -> None:
        self._open([record.sink.get("bytes")] if resumed else None)
        if resumed:
            self.out.resume(record.sink)
        self._prefix = (
            f'"model": {json.dumps(record.model)}, "version": {json.dumps(record.version)}, '
            f'"fingerprint": {json.dumps(record.fingerprint)}, "embedding": '
        )

    def write(self, rows: Sequence[Row], result: EncodeResult) -> None:
        prefix = self._prefix.encode()
        self.handles[0].write(
            b"".join(
                b'{"id": %s, %s%s}\n' % (json.dumps(row.id, ensure_ascii=False).encode(), prefix, vector)
                for row, vector in zip(rows, self.out.json_rows(result), strict=True)
            )
        )

    def sync(self) -> dict[str, Any]:
        return {"bytes": self._sync()[0], **self.out.state()}

    def finish(self, record: JobRecord) -> None:
        self._sync()
