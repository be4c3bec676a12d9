"""An approximate index beside a corpus's matrix, for corpora too big to scan per query.

Library: usearch (HNSW, Unum; wheels for every platform, no build step). Chosen by
measurement against faiss-cpu's HNSW on the same 100,000 x 384 MiniLM corpus (the figures
are in docs/corpora.md). The index is written by ``hs index build --ann`` (or ``hs index ann
DIR``) as ``ann.usearch``, with ``ann.json``: the settings, the recall@10 it measured
against exact search, and a digest of the file and of the manifest it belongs to. The
daemon memory-maps it (``view``) after checking both digests: a damaged or stale index is
refused with the reason and the corpus is searched exactly instead.

Scores are recomputed exactly from the matrix for the rows the index returns, so an index
stored in f16 or i8 ranks approximately but never reports an approximate score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from hotswapd.corpus.files import MANIFEST, MATRIX, CorpusError, write_atomically

log = logging.getLogger(__name__)
ANN = "ann.usearch"
ANN_FACTS = "ann.json"
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64
DTYPE = "f16"
RECALL_SAMPLE = 500


class AnnFacts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    library: str = Field(max_length=64)
    library_version: str = Field(max_length=64)
    dtype: str = Field(max_length=8)
    connectivity: PositiveInt
    expansion_search: int = Field(ge=1, le=4096)
    rows: int
    recall_at_10: float = Field(ge=0, le=1)
    file_sha256: str = Field(max_length=64)
    manifest_sha256: str = Field(max_length=64)
    seconds: float = 0.0


def build_ann(directory: Path, *, threads: int | None = None) -> AnnFacts:
    """Index the corpus at ``directory`` and measure it against exact search."""
    try:
        import usearch
        from usearch.index import Index
    except ImportError:
        raise CorpusError("an approximate index needs usearch: pip install 'hotswap[ann]'") from None
    matrix = np.load(directory / MATRIX, mmap_mode="r")
    if matrix.shape[0] == 0:
        raise CorpusError(f"{directory} has no rows to index")
    started = time.perf_counter()
    index = Index(ndim=matrix.shape[1], metric="ip", dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
    step = 65536
    for start in range(0, matrix.shape[0], step):
        rows = np.ascontiguousarray(matrix[start : start + step])
        index.add(np.arange(start, start + len(rows), dtype=np.uint64), rows, threads=threads or os.cpu_count() or 1)
    partial = directory / f".{ANN}.partial"
    index.save(str(partial))
    recall = _recall(index, matrix)
    os.replace(partial, directory / ANN)
    facts = AnnFacts(
        library="usearch", library_version=usearch.__version__, dtype=DTYPE, connectivity=CONNECTIVITY, expansion_search=EXPANSION_SEARCH,
        rows=int(matrix.shape[0]), recall_at_10=round(recall, 4), file_sha256=_sha256(directory / ANN),
        manifest_sha256=_sha256(directory / MANIFEST), seconds=round(time.perf_counter() - started, 2),
    )
    write_atomically(directory / ANN_FACTS, facts.model_dump_json(indent=1).encode())
    return facts


def _recall(index: Any, matrix: np.ndarray, k: int = 10) -> float:
    """recall@10 against exact search, for rows spread over the corpus used as queries."""
    picks = np.linspace(0, matrix.shape[0] - 1, num=min(RECALL_SAMPLE, matrix.shape[0]), dtype=np.int64)
    found = 0.0
    for row in picks:
        query = np.asarray(matrix[row], dtype=np.float32)
        scores = matrix @ query
        exact = set(np.argpartition(scores, -k)[-k:].tolist()) if len(scores) > k else set(range(len(scores)))
        found += len(exact & {int(key) for key in index.search(query, k).keys}) / len(exact)
    return found / len(picks)


class AnnIndex:
    """A loaded approximate index: rows to look at, ranked approximately."""

    def __init__(self, directory: Path, rows: int, dim: int) -> None:
        facts = _facts(directory)
        if facts.rows != rows:
            raise CorpusError(f"{directory / ANN} indexes {facts.rows} rows; the corpus has {rows} (build it again: hs index ann)")
        if facts.manifest_sha256 != _sha256(directory / MANIFEST) or facts.file_sha256 != _sha256(directory / ANN):
            raise CorpusError(f"{directory / ANN} does not match its corpus or is damaged (build it again: hs index ann)")
        try:
            from usearch.index import Index
        except ImportError:
            raise CorpusError("the corpus has an approximate index and usearch is not installed: pip install 'hotswap[ann]'") from None
        self.facts = facts
        self._where = directory / ANN
        try:
            self._index = Index.restore(str(self._where), view=True)
        except Exception as exc:  # noqa: BLE001 -- usearch refuses a damaged file with whatever it raises
            raise CorpusError(f"{self._where}: usearch cannot read it ({type(exc).__name__}: {exc})") from None
        if self._index is None or self._index.ndim != dim or len(self._index) != rows:
            raise CorpusError(f"{self._where} does not index this corpus's {rows} x {dim} vectors (build it again: hs index ann)")
        self._index.expansion_search = facts.expansion_search

    def candidates(self, query: np.ndarray, k: int) -> np.ndarray | None:
        """The rows the index finds, or None when it fails (the caller then scans every row)."""
        try:
            return np.asarray(self._index.search(query, k).keys, dtype=np.int64)
        except Exception:
            log.exception("%s failed a query; searching exactly", self._where)
            return None

    def describe(self) -> str:
        return f"ann (usearch {self.facts.dtype}, recall@10 {self.facts.recall_at_10:.3f})"


def has_ann(directory: Path) -> bool:
    return (directory / ANN_FACTS).is_file()


def _facts(directory: Path) -> AnnFacts:
    try:
        return AnnFacts.model_validate_json((directory / ANN_FACTS).read_bytes()[: 1 << 20])
    except (OSError, ValidationError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{directory / ANN_FACTS} is unreadable ({type(exc).__name__})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
