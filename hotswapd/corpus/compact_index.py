"""A corpus's compact copies of its matrix, searched first, with the float rows kept on disk
for rescoring: ``embeddings.ubinary.npy`` (sign bits, 8 a byte: 1/32 of float32) and
``embeddings.int8.npy`` with ``embeddings.int8-ranges.npy`` (the corpus's own per-dimension min and
max: 1/4), as sentence-transformers' ``quantize_embeddings`` makes them.

A search scores every row in the compact copy (Hamming distance with a popcount, or an
int8 dot product in blocks), takes the ``RESCORE`` x k best, and orders those by the exact
cosine of their float rows, read from the memory-mapped ``embeddings.npy``: only the
candidates' pages are touched, so what stays in memory is the compact copy. The float
rows are kept rather than re-encoded from the texts: re-encoding 100 candidates would cost
a model run per query, reading them costs 100 row reads.

Written by ``hs index build --dtype`` or ``hs index compact`` from the finished float
matrix; checked like every corpus file (shape, dtype, size) before use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hotswapd.corpus.files import MATRIX, CorpusError, read_manifest, read_npy_header, regular_file
from hotswapd.wire.compact import quantize

COMPACT = {"binary": "embeddings.ubinary.npy", "int8": "embeddings.int8.npy"}
INT8_RANGES = "embeddings.int8-ranges.npy"
RESCORE = 10  # candidates per result rescored with float rows (recall@10 >= 0.95 on binary, measured in bench_search)
MIN_CANDIDATES = 100
BLOCK = 65536  # rows at a time: writing, and scoring int8


def write_compact(directory: Path, dtype: str) -> Path:
    """The compact copy of ``directory``'s float matrix (and, for int8, its ranges)."""
    if dtype not in COMPACT:
        raise CorpusError(f"a corpus's compact copy is one of {', '.join(COMPACT)}, not {dtype!r}")
    manifest = read_manifest(directory)  # a finished corpus only: a build in progress has no manifest yet
    floats = np.load(regular_file(directory / MATRIX), mmap_mode="r")
    if floats.dtype != np.dtype("<f4") or floats.shape != (manifest.rows, manifest.dim):
        raise CorpusError(f"{directory / MATRIX} is a {floats.dtype} {floats.shape} matrix; its manifest says float32 {manifest.rows} x {manifest.dim}")
    rows, dim = floats.shape
    ranges = None
    if dtype == "int8":
        # The corpus's own ranges (quantize_embeddings' default), block by block.
        low, high = np.full(dim, np.inf, np.float32), np.full(dim, -np.inf, np.float32)
        for start in range(0, rows, BLOCK):
            block = np.asarray(floats[start : start + BLOCK], dtype=np.float32)
            low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
        ranges = np.vstack((low, high)) if rows else np.zeros((2, dim), np.float32)
        np.save(directory / f".{INT8_RANGES}.tmp.npy", ranges)
        os.replace(directory / f".{INT8_RANGES}.tmp.npy", directory / INT8_RANGES)
    width = (dim + 7) // 8 if dtype == "binary" else dim
    kind = "ubinary" if dtype == "binary" else "int8"
    staging = directory / f".{COMPACT[dtype]}.tmp.npy"
    out = np.lib.format.open_memmap(staging, mode="w+", dtype=np.uint8 if dtype == "binary" else np.int8, shape=(rows, width))
    for start in range(0, rows, BLOCK):
        out[start : start + BLOCK] = quantize(np.asarray(floats[start : start + BLOCK], dtype=np.float32), kind, ranges)
    out.flush()
    del out
    os.replace(staging, directory / COMPACT[dtype])  # whole, or not there: a reader never sees half
    return directory / COMPACT[dtype]


class CompactIndex:
    """The compact copies a corpus directory has, memory-mapped and checked."""

    def __init__(self, directory: Path, rows: int, dim: int) -> None:
        self.kinds: dict[str, np.ndarray] = {}
        self.ranges: np.ndarray | None = None
        for dtype, name in COMPACT.items():
            path = directory / name
            if not path.exists():
                continue
            width, descr = ((dim + 7) // 8, "|u1") if dtype == "binary" else (dim, "|i1")
            self.kinds[dtype] = _mapped(path, (rows, width), descr)
        if "int8" in self.kinds:
            self.ranges = np.asarray(_mapped(directory / INT8_RANGES, (2, dim), "<f4"), dtype=np.float32)
            if not np.isfinite(self.ranges).all() or not bool(np.all(self.ranges[0] <= self.ranges[1])):
                raise CorpusError(f"{directory / INT8_RANGES} is not a minimum row over a maximum row of finite values")

    @property
    def memory_bytes(self) -> int:
        return int(sum(matrix.nbytes for matrix in self.kinds.values()))

    def preferred(self) -> str | None:
        return "binary" if "binary" in self.kinds else ("int8" if "int8" in self.kinds else None)

    def candidates(self, query: np.ndarray, count: int, dtype: str) -> np.ndarray:
        """The ``count`` rows nearest ``query`` in the compact copy ``dtype``."""
        matrix = self.kinds[dtype]
        rows = matrix.shape[0]
        count = min(count, rows)
        if dtype == "binary":
            bits = np.packbits(query > 0)
            scores = -_popcount(np.bitwise_xor(matrix, bits)).sum(axis=1, dtype=np.int32)  # fewer differing bits: nearer
        else:
            q = quantize(query.reshape(1, -1), "int8", self.ranges)[0].astype(np.float32)
            scores = np.concatenate([matrix[i : i + BLOCK].astype(np.float32) @ q for i in range(0, rows, BLOCK)]) if rows else np.zeros(0, np.float32)
        return np.argpartition(scores, -count)[-count:] if count < rows else np.arange(rows)


_BITS = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _popcount(bytes_: np.ndarray) -> np.ndarray:
    """Set bits per byte: numpy 2's instruction, else a table (numpy 1.x)."""
    count = getattr(np, "bitwise_count", None)
    return count(bytes_) if count is not None else _BITS[bytes_]


def _mapped(path: Path, shape: tuple[int, int], descr: str) -> np.ndarray:
    try:
        with open(regular_file(path), "rb") as handle:
            found, found_descr, offset = read_npy_header(handle)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CorpusError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    item = np.dtype(descr).itemsize
    if tuple(found) != shape or found_descr.replace("=", "<" if item > 1 else "|") != descr or size < offset + shape[0] * shape[1] * item:
        raise CorpusError(f"{path}: a {found_descr} array of shape {tuple(found)}, not the {descr} {shape} its corpus needs (run hs index compact again)")
    if shape[0] == 0:
        return np.zeros(shape, dtype=descr)
    return np.memmap(path, dtype=descr, mode="r", offset=offset, shape=shape)
