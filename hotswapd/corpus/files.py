"""The corpus directory, documented in docs/corpora.md:

    manifest.json       what made it (model, version, fingerprint, weights), rows, dim;
                        written last, atomically: without it the directory is not a corpus
    embeddings.npy      rows x dim little-endian float32, L2-normalised (numpy's .npy)
    rows.jsonl          one JSON object per row, in row order: {"id": ..., "text": ...}
                        ("text" only when the build kept the texts)
    rows.offsets.npy    rows + 1 little-endian int64: where each row's line starts in
                        rows.jsonl (the last: its size), so a result's id is one read
    build.progress.json only while a build runs or after it was interrupted (--resume)

Nothing here imports numpy: ``hs index build`` writes these files from the daemon's reply
frames, which already are little-endian float32.
"""

from __future__ import annotations

import ast
import json
import os
import stat
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from hotswapd.errors import HotswapError
from hotswapd.wire.npy import npy_header as write_npy_header
from hotswapd.host.safefiles import sync_directory, write_atomically  # noqa: F401 -- re-exported for the corpus modules

FORMAT = "hotswap-corpus/1"
MANIFEST = "manifest.json"
MATRIX = "embeddings.npy"
ROWS = "rows.jsonl"
OFFSETS = "rows.offsets.npy"
PROGRESS = "build.progress.json"
# A fixed .npy header size, so a matrix written row by row gets its real shape written
# over the placeholder in place at the end (numpy pads headers with spaces to 64 bytes).
NPY_HEADER_BYTES = 128
MAX_MANIFEST_BYTES = 1 << 20


class CorpusError(HotswapError):
    """A corpus directory that cannot be used (or built) as it is, and why."""

    code = "corpus_error"


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer builder may add fields

    format: Literal["hotswap-corpus/1"]
    model: str = Field(max_length=256)
    version: str = Field(max_length=256)
    fingerprint: str = Field(max_length=128)  # the version's vector identity when it was built
    weights: str | None = Field(default=None, max_length=128)  # the weights digest
    rows: NonNegativeInt
    dim: PositiveInt
    dtype: Literal["float32"] = "float32"
    normalized: bool = True
    texts: bool = False  # rows.jsonl holds the texts too
    created: float = 0.0
    builder: str = Field(default="", max_length=256)
    input: str | None = Field(default=None, max_length=4096)  # the file it was built from


def regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (a FIFO in its place would block the load forever)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise CorpusError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(mode):
        raise CorpusError(f"{path} is not a regular file")
    return path


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        with open(regular_file(path), "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        hint = " (a build is unfinished: hs index build --resume)" if (directory / PROGRESS).exists() else ""
        raise CorpusError(f"{directory} has no {MANIFEST}: not a finished corpus{hint}") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CorpusError(f"{path} is over {MAX_MANIFEST_BYTES} bytes: not a manifest")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise CorpusError(f"{path}: {where}: {first['msg']}") from None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically: written beside, synced, renamed over (a reader sees all of it or none)."""
    write_atomically(directory / MANIFEST, manifest.model_dump_json(indent=1).encode())


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """A .npy header of exactly NPY_HEADER_BYTES bytes (the shape is written over it at the end)."""
    return write_npy_header(shape, descr, NPY_HEADER_BYTES)


def read_npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], str, int]:
    """(shape, descr, data offset) of a .npy file, read without numpy (and without pickle)."""
    start = handle.read(10)
    if len(start) < 10 or start[:6] != b"\x93NUMPY":
        raise CorpusError("not a .npy file")
    major = start[6]
    if major == 1:
        (length,) = struct.unpack("<H", start[8:10])
        offset = 10 + length
    else:
        (length,) = struct.unpack("<I", start[8:10] + handle.read(2))
        offset = 12 + length
    if length > 65536:
        raise CorpusError("a .npy header over 64 KiB")
    try:
        header = ast.literal_eval(handle.read(length).decode("latin1"))
        shape = tuple(int(n) for n in header["shape"])
        descr, fortran = header["descr"], header["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError) as exc:
        raise CorpusError(f"a malformed .npy header ({type(exc).__name__})") from None
    if fortran or not isinstance(descr, str):
        raise CorpusError("a Fortran-ordered or structured .npy matrix")
    return shape, descr, offset


def now() -> float:
    return round(time.time(), 3)


def row_line(row_id: Any, text: str | None) -> bytes:
    record: dict[str, Any] = {"id": row_id}
    if text is not None:
        record["text"] = text
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
