"""A corpus opened by the daemon: the matrix memory-mapped (never copied), rows read on
demand, searched exactly with one BLAS matrix-vector product.

Every file here came from outside and is checked before use: the manifest against the
matrix's real shape and dtype, the file sizes against the shape (a short file would fault
on access), the row offsets for order. A check that fails is a :class:`CorpusError` with
the reason, never a crash.

Replace a corpus by writing a new directory and pointing the config at it, or renaming it
into place: the daemon sees the new files at the next search, reload or check
(:mod:`hotswapd.corpus.attach`) and swaps them in; the old maps close after their last
search. A file overwritten in place is refused (a memory-mapped file changed under a
running process mixes two corpora, or faults it when cut short, as it would faiss).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.corpus.ann import AnnIndex, has_ann
from hotswapd.corpus.compact_index import MIN_CANDIDATES, RESCORE, CompactIndex
from hotswapd.corpus.files import (
    MATRIX,
    OFFSETS,
    ROWS,
    CorpusError,
    Manifest,
    read_manifest,
    read_npy_header,
    regular_file,
)

log = logging.getLogger(__name__)
MAX_K = 1000
MAX_ROW_BYTES = 16 << 20


@dataclass(frozen=True)
class Hit:
    row: int
    score: float
    id: Any
    text: str | None


class Corpus:
    def __init__(self, where: Path, matrix: np.ndarray, manifest: Manifest | None, offsets: np.ndarray | None, rows_fd: int | None) -> None:
        self.where = where
        self.manifest = manifest
        self._matrix = matrix
        self._offsets = offsets
        self._rows_fd = rows_fd
        self._ann: AnnIndex | None = None
        self.ann_problem: str | None = None
        self._compact: CompactIndex | None = None
        self.compact_problem: str | None = None
        # Searches using it now: a corpus swapped out is closed after the last of them.
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()
        if manifest is not None and has_ann(where):
            try:
                self._ann = AnnIndex(where, manifest.rows, matrix.shape[1])
            except CorpusError as exc:
                self.ann_problem = str(exc)
                log.warning("%s is searched exactly: %s", where, exc)
        if manifest is not None:
            try:
                self._compact = CompactIndex(where, manifest.rows, matrix.shape[1])
            except CorpusError as exc:
                self.compact_problem = str(exc)
                log.warning("%s is searched with its float rows: %s", where, exc)

    @property
    def rows(self) -> int:
        return int(self._matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def memory_bytes(self) -> int:
        """What searching it keeps in memory: the compact copy when it has one (its float rows
        stay on disk, read only for the candidates), else the float matrix; and the offsets."""
        compact = self._compact.memory_bytes if self._compact is not None and self._compact.kinds and self._ann is None else None
        return int((compact if compact is not None else self._matrix.nbytes) + (self._offsets.nbytes if self._offsets is not None else 0))

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.where),
            "rows": self.rows,
            "dim": self.dim,
            "memory_mb": round(self.memory_bytes / 2**20, 1),
            "index": self._ann.describe() if self._ann is not None else "exact",
            "ann_problem": self.ann_problem,
            "compact": sorted(self._compact.kinds) if self._compact is not None else [],
            "compact_problem": self.compact_problem,
            "float_mb": round(self._matrix.nbytes / 2**20, 1),
            "texts": bool(self.manifest and self.manifest.texts),
            "built_by": self.manifest.fingerprint if self.manifest else None,
        }

    def search(self, query: np.ndarray, k: int, *, exact: bool = False, precision: str | None = None) -> list[Hit]:
        """The ``k`` rows most similar to ``query`` (cosine: both sides are normalised):
        through the approximate index when there is one, else the compact copy's candidates
        rescored with their float rows, else one matrix-vector product over every row.
        ``exact`` (or ``precision = "float"``) scans the float rows; ``precision = "binary"``
        or ``"int8"`` picks that compact copy."""
        if not 0 < k <= MAX_K:
            raise CorpusError(f"k must be in 1..{MAX_K}")
        if self.rows == 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(self.dim)
        k = min(k, self.rows)
        kinds = self._compact.kinds if self._compact is not None else {}
        if precision not in (None, "float") and precision not in kinds:
            why = f": {self.compact_problem}" if self.compact_problem else f" (hs index compact {self.where} --dtype {precision})"
            raise CorpusError(f"{self.where} has no usable {precision} copy{why}")
        exact = exact or precision == "float"
        chosen = precision if precision in kinds else (self._compact.preferred() if self._compact is not None and self._ann is None else None)
        if chosen is not None and not exact:
            assert self._compact is not None
            rows = self._compact.candidates(query, max(MIN_CANDIDATES, RESCORE * k), chosen)
        else:
            rows = self._ann.candidates(query, k) if self._ann is not None and not exact else None
        if rows is not None:
            rows = rows[(rows >= 0) & (rows < self.rows)]
            found = self._matrix[np.sort(rows)] @ query  # exact scores for what the index found
            order = np.argsort(-found, kind="stable")[:k]
            return _finite([self._hit(int(row), float(score)) for row, score in zip(np.sort(rows)[order], found[order], strict=True)], self.where)
        scores = self._matrix @ query
        top = np.argpartition(scores, -k)[-k:] if k < self.rows else np.arange(self.rows)
        top = top[np.argsort(-scores[top], kind="stable")]
        return _finite([self._hit(int(row), float(scores[row])) for row in top], self.where)

    def _hit(self, row: int, score: float) -> Hit:
        if self._offsets is None or self._rows_fd is None:
            return Hit(row, score, row, None)  # a bare matrix: the row number is the id
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        if not 0 < end - start <= MAX_ROW_BYTES:
            raise CorpusError(f"{self.where / OFFSETS}: row {row} has a bad extent")
        raw = os.pread(self._rows_fd, end - start, start)
        try:
            record = json.loads(raw, parse_constant=_no_constant)
            return Hit(row, score, record["id"], record.get("text"))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise CorpusError(f"{self.where / ROWS}: row {row} is not a JSON object with an id") from None

    def acquire(self) -> bool:
        """Hold it open for one search; False once it is closed (swapped out and done)."""
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._retired and self._users == 0
        if last:
            self._close_now()

    def close(self) -> None:
        """Closed now, or after the last search holding it (:meth:`acquire`)."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            idle = self._users == 0
        if idle:
            self._close_now()

    def _close_now(self) -> None:
        if self._rows_fd is not None:
            os.close(self._rows_fd)
            self._rows_fd = None
        # The maps go when the last reference does (an unlinked corpus's disk space with them).
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._offsets = None
        self._ann = None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(hits: list[Hit], where: Path) -> list[Hit]:
    bad = next((hit.row for hit in hits if not np.isfinite(hit.score)), None)
    if bad is not None:
        raise CorpusError(f"{where}: row {bad} holds NaN or infinite values (rebuild the corpus)")
    return hits


def open_corpus(path: Path) -> Corpus:
    """A corpus directory (with its manifest), or a bare ``.npy`` matrix (ids = row numbers)."""
    if path.is_file():
        log.warning("%s is a bare matrix with no manifest: its rows' ids are their numbers, and nothing says which model made it", path)
        return Corpus(path, _matrix(path, None), None, None, None)
    if not path.is_dir():
        raise CorpusError(f"{path} does not exist")
    manifest = read_manifest(path)
    matrix = _matrix(path / MATRIX, manifest)
    offsets, rows_fd = _rows(path, manifest.rows)
    return Corpus(path, matrix, manifest, offsets, rows_fd)


def _matrix(path: Path, manifest: Manifest | None) -> np.ndarray:
    try:
        with open(regular_file(path), "rb") as handle:
            shape, descr, offset = read_npy_header(handle)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise CorpusError(f"{path} does not exist") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CorpusError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    if descr not in ("<f4", "=f4") or len(shape) != 2:
        raise CorpusError(f"{path}: a {descr} matrix of shape {shape}; a corpus is a 2-d little-endian float32 matrix")
    rows, dim = shape
    if manifest is not None and (rows, dim) != (manifest.rows, manifest.dim):
        raise CorpusError(f"{path} is {rows} x {dim}; its manifest says {manifest.rows} x {manifest.dim}")
    if size < offset + rows * dim * 4:
        raise CorpusError(f"{path} is {size} bytes, short of its {rows} x {dim} float32 rows (cut off?)")
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(rows, dim))


def _rows(directory: Path, rows: int) -> tuple[np.ndarray, int]:
    matrix = _matrix_int64(directory / OFFSETS, rows + 1)
    try:
        descriptor = os.open(regular_file(directory / ROWS), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CorpusError(f"cannot read {directory / ROWS}: {exc.strerror or exc}") from None
    size = os.fstat(descriptor).st_size
    if matrix[0] != 0 or matrix[-1] != size or (rows and not bool(np.all(np.diff(matrix) > 0))):
        os.close(descriptor)
        raise CorpusError(f"{directory / OFFSETS} does not describe {directory / ROWS} (rebuild the corpus)")
    return matrix, descriptor


def _matrix_int64(path: Path, length: int) -> np.ndarray:
    try:
        with open(regular_file(path), "rb") as handle:
            shape, descr, offset = read_npy_header(handle)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CorpusError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    if descr not in ("<i8", "=i8") or shape != (length,) or size < offset + length * 8:
        raise CorpusError(f"{path}: expected {length} little-endian int64 offsets, found a {descr} array of shape {shape}")
    return np.memmap(path, dtype="<i8", mode="r", offset=offset, shape=(length,))
