"""Writers for ``hs encode`` output: json, jsonl and npy, all streaming.

Each writer takes results chunk by chunk, so memory stays flat however many lines come
through stdin. Floats are written with 9 significant digits, the fewest that round-trip
every float32 (orjson's shortest float32 text for replies of many rows: the same values).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import BinaryIO, Protocol

from hotswapd.client.encode_result import EncodeResult
from hotswapd.wire.npy import npy_header


class Writer(Protocol):
    def write(self, result: EncodeResult) -> None: ...

    def finish(self) -> None: ...


def _rows(result: EncodeResult, dtype: str) -> list[bytes]:
    """Each row as JSON text: float32 as before; a compact type as its numbers (ints for
    int8, uint8 and the packed binary bytes)."""
    if dtype == "float32":
        return result.json_rows()
    if not result.count:
        return []
    return [json.dumps(row).encode() for row in result.compact(dtype).tolist()]


def _compact_facts(result: EncodeResult, dtype: str) -> dict[str, object]:
    if dtype == "float32":
        return {}
    return {"dtype": dtype, **({"calibration": result.calibration} if result.calibration else {})}


class JsonWriter:
    """One object: {"model", "version", "dim", "embeddings": [[...], ...]}."""

    def __init__(self, out: BinaryIO, dtype: str = "float32") -> None:
        self._out = out
        self._dtype = dtype
        self._started = False
        self._truncated = self._chunked = 0

    def write(self, result: EncodeResult) -> None:
        self._truncated += result.truncated
        self._chunked += result.chunked
        if not self._started:
            head = {"model": result.model, "version": result.version, "fingerprint": result.fingerprint, "dim": result.dim, **_compact_facts(result, self._dtype)}
            if result.members:  # an ensemble: which version of each member went into the vectors
                head["members"] = result.members
            self._out.write((json.dumps(head)[:-1] + ', "embeddings": [').encode())
            self._started = True
        else:
            self._out.write(b",")
        self._out.write(b",".join(_rows(result, self._dtype)))

    def finish(self) -> None:
        if not self._started:
            self._out.write(b'{"model": null, "version": null, "fingerprint": null, "dim": 0, "embeddings": [')
        # Known only at the end of a stream: texts over the maximum tokens, cut or chunked.
        self._out.write(f'], "truncated": {self._truncated}, "chunked": {self._chunked}}}\n'.encode())


class JsonlWriter:
    """One object per input line: {"index", "model", "version", "embedding"}."""

    def __init__(self, out: BinaryIO, dtype: str = "float32") -> None:
        self._out = out
        self._dtype = dtype
        self._index = 0

    def write(self, result: EncodeResult) -> None:
        compact = "".join(f"{json.dumps(k)}: {json.dumps(v)}, " for k, v in _compact_facts(result, self._dtype).items())
        prefix = (
            f'"model": {json.dumps(result.model)}, "version": {json.dumps(result.version)}, '
            f'"fingerprint": {json.dumps(result.fingerprint)}, {compact}"embedding": '
        ).encode()
        lines = []
        for vector in _rows(result, self._dtype):
            lines.append(b'{"index": %d, %s%s}\n' % (self._index, prefix, vector))
            self._index += 1
        self._out.write(b"".join(lines))

    def finish(self) -> None:
        self._out.flush()


class NpyWriter:
    """A valid .npy file. The row count is known only at the end, so rows go to a spool
    file first and follow the header once it can be written: constant memory, and stdout
    may be a pipe."""

    def __init__(self, out: BinaryIO, dtype: str = "float32") -> None:
        self._out = out
        self._dtype = dtype
        self._descr = "<f4"
        self._spool = tempfile.TemporaryFile()
        self._count = 0
        self._dim = 0

    def write(self, result: EncodeResult) -> None:
        self._count += result.count
        if self._dtype == "float32":
            self._dim = result.dim
            self._spool.write(result.buffer)
            return
        from hotswapd.wire.compact import numpy_dtype, row_length

        self._dim, self._descr = row_length(self._dtype, result.dim), numpy_dtype(self._dtype)
        if result.count:
            self._spool.write(result.compact(self._dtype).tobytes())  # the file keeps the dtype: int8, uint8, float16, packed bits

    def finish(self) -> None:
        self._out.write(npy_header((self._count, self._dim), self._descr))
        self._spool.seek(0)
        shutil.copyfileobj(self._spool, self._out, 1 << 20)
        self._spool.close()
        self._out.flush()


WRITERS: dict[str, type[JsonWriter | JsonlWriter | NpyWriter]] = {
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "npy": NpyWriter,
}
