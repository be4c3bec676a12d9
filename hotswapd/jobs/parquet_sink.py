"""A job's parquet output: the id column and ``embedding`` as ``fixed_size_list<float32>``.

A parquet file is whole only once its footer is written, so a job cannot append to one
across a kill. Rows go instead to part files in the job's work directory, one closed (and
synced) at each checkpoint or every ``PART_ROWS`` rows; the record lists the parts that
are good. At the end the parts are copied, in order, into one file whose schema metadata
names the model, version and fingerprint (``hotswap.*`` keys, and ``hotswap`` as JSON),
which is then renamed into place. pyarrow writes it: the ``files`` extra.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hotswapd.client.encode_result import EncodeResult
from hotswapd.files.readers import Row
from hotswapd.jobs.job_record import START_OVER, JobError, JobRecord
from hotswapd.host.safefiles import sync_directory

PART_ROWS = 16384  # rows held in memory before a part is written, checkpoint or not
MERGE_BYTES = 64 << 20  # rows gathered into one row group of the final file
PART_PREFIX = "part-"
PART_NAME = re.compile(r"part-\d{6}\.parquet")
INT64 = (-(2**63), 2**63 - 1)


def pyarrow_modules() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise JobError("writing parquet needs pyarrow: pip install 'hotswap[files]'") from None
    return pa, pq


# No dictionary: a column of unique ids and one of float32 vectors gain nothing from one,
# and trying cost 4x the write (2,000 x 384 rows: 23 ms against 5 ms, and the file grew
# from 3.1 to 3.7 MB). Snappy stays for string ids; float32 vectors hardly compress.
WRITE_OPTIONS: dict[str, Any] = {"use_dictionary": False}


class ParquetSink:
    checkpoint_seconds = 5.0  # each checkpoint closes a part: not too many small ones

    def __init__(self, work: Path, output: Path, id_column: str = "id", dtype: str = "float32") -> None:
        from hotswapd.jobs.sinks import CompactRows

        self.out = CompactRows(dtype)
        self.pa, self.pq = pyarrow_modules()
        self.work, self.output, self.id_column = work, output, id_column
        self.parts: list[str] = []
        self.id_type: str | None = None  # "int64" or "string", fixed by the first row
        self.dim = 0
        self._ids: list[Any] = []
        self._vectors: list[bytes] = []

    def begin(self, record: JobRecord, resumed: bool) -> None:
        self.dim = record.dim
        if resumed:
            parts, id_type = record.sink.get("parts"), record.sink.get("id_type")
            # Only this directory's own part files, all there: a record naming other files
            # (../x.parquet) or missing ones describes another job.
            if (not isinstance(parts, list) or id_type not in ("int64", "string", None)
                    or not all(isinstance(name, str) and PART_NAME.fullmatch(name) and (self.work / name).is_file() for name in parts)):
                raise JobError(f"{self.work} does not hold the parts the job's record names; {START_OVER}")
            self.parts, self.id_type = list(parts), id_type
            self.out.resume(record.sink)
        for path in self.work.glob(f"{PART_PREFIX}*.parquet"):
            if path.name not in self.parts:
                path.unlink()  # written after the last checkpoint: its rows come again

    def write(self, rows: Sequence[Row], result: EncodeResult) -> None:
        for row in rows:
            kind = "string" if isinstance(row.id, str) else "int64"
            if self.id_type is None:
                self.id_type = kind
            elif kind != self.id_type:
                raise JobError(f"row {row.number}: the id {row.id!r} is a {type(row.id).__name__}, but earlier ids are {self.id_type}s; one column holds one type")
            if kind == "int64" and not INT64[0] <= row.id <= INT64[1]:
                raise JobError(f"row {row.number}: the id {row.id} does not fit a 64-bit integer column; write .npy or .jsonl, or make the ids strings")
            self._ids.append(row.id)
        self._vectors.append(bytes(self.out.frame(result)))
        if len(self._ids) >= PART_ROWS:
            self._write_part()

    def sync(self) -> dict[str, Any]:
        self._write_part()
        sync_directory(self.work)
        return {"parts": list(self.parts), "id_type": self.id_type, **self.out.state()}

    def finish(self, record: JobRecord) -> None:
        merged = self.work / "merged.parquet"
        schema = self._schema().with_metadata(_metadata(record))
        with open(merged, "wb") as handle:
            writer = self.pq.ParquetWriter(handle, schema, **WRITE_OPTIONS)
            gathered: list[Any] = []
            size = 0
            tail = self._buffered()  # the rows since the last part: straight into the output
            for table in [*(self._read_part(name) for name in self.parts), *([tail] if tail is not None else [])]:
                gathered.append(table)
                size += table.nbytes
                if size >= MERGE_BYTES:
                    writer.write_table(self.pa.concat_tables(gathered))
                    gathered, size = [], 0
            if gathered:
                writer.write_table(self.pa.concat_tables(gathered))
            writer.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(merged, self.output)
        sync_directory(self.output.parent)

    def discard(self) -> None:
        for path in self.work.glob(f"{PART_PREFIX}*.parquet"):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._ids, self._vectors = [], []

    def _read_part(self, name: str) -> Any:
        """A part written earlier (by this job or the run it resumes), as it was written.
        ParquetFile, not read_table: that one imports pandas (a third of a second a job)."""
        table = self.pq.ParquetFile(self.work / name).read()
        if not table.schema.equals(self._schema(), check_metadata=False):
            raise JobError(f"{self.work / name} is not a part of this job (its columns are {table.schema}); start over with --restart")
        return table

    def _schema(self) -> Any:
        id_type = self.pa.string() if self.id_type == "string" else self.pa.int64()
        value = {"float32": self.pa.float32(), "float16": self.pa.float16(), "int8": self.pa.int8(), "binary": self.pa.int8(),
                 "uint8": self.pa.uint8(), "ubinary": self.pa.uint8()}[self.out.dtype]
        return self.pa.schema([(self.id_column, id_type), ("embedding", self.pa.list_(value, self.out.width(self.dim)))])

    def _write_part(self) -> None:
        table = self._buffered()
        if table is None:
            return
        name = f"{PART_PREFIX}{len(self.parts):06d}.parquet"
        with open(self.work / name, "wb") as handle:
            self.pq.write_table(table, handle, **{**WRITE_OPTIONS, "compression": "none"})  # read back once, by this job
            handle.flush()
            os.fsync(handle.fileno())
        self.parts.append(name)
        self._ids, self._vectors = [], []

    def _buffered(self) -> Any:
        """The rows written since the last part, as a table (None: there are none)."""
        if not self._ids:
            return None
        pa = self.pa
        data = b"".join(self._vectors)
        value = self._schema().field("embedding").type.value_type
        values = pa.Array.from_buffers(value, len(data) // (value.bit_width // 8), [None, pa.py_buffer(data)])  # little-endian rows of the output type
        try:
            ids = _id_array(pa, self._ids, self.id_type)
        except (OverflowError, TypeError, ValueError, AttributeError) as exc:
            raise JobError(f"an id does not fit the id column: {exc}") from None
        return pa.table([ids, pa.FixedSizeListArray.from_arrays(values, self.out.width(self.dim))], schema=self._schema())


def _id_array(pa: Any, ids: list[Any], id_type: str) -> Any:
    """The id column, built from its buffers: ``pa.array`` looks at its input for pandas
    objects, and importing pandas to do so cost every job a third of a second."""
    import numpy as np

    if id_type != "string":
        values = np.asarray(ids, dtype=np.int64)  # OverflowError for an id past int64
        return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
    encoded = [value.encode("utf-8") for value in ids]  # AttributeError: an id that is not a string
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(value) for value in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise OverflowError("the ids of one part exceed 2 GiB")
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])


def _metadata(record: JobRecord) -> dict[str, str]:
    facts = {
        "model": record.model, "version": record.version, "fingerprint": record.fingerprint, "weights": record.weights,
        "dim": record.dim, "rows": record.rows, "normalized": record.settings.get("normalize", True) is not False,
        "created": round(time.time(), 3), "input": record.input.get("path"),
    }
    flat = {f"hotswap.{key}": str(facts[key]) for key in ("model", "version", "fingerprint")}
    return {"hotswap": json.dumps(facts), **flat}
