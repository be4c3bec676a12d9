"""A bridge while a re-embed runs: a linear map from a new version's query space into an
old version's corpus space, so the new version can serve searches on the old corpus until
its own is built (after Drift-Adapter, EMNLP 2025: an orthogonal Procrustes map recovered
95-99 % of a full re-embed's recall).

``hs index bridge NEW --to-corpus-of OLD --sample FILE`` encodes the sample with both
versions, fits the map on most of it (orthogonal Procrustes when the dimensions agree, a
ridge least-squares map otherwise) and measures recall@10 on the rest: held-out queries,
mapped and searched among the old version's vectors of the fitted texts, against the new
version's own exact results. The daemon serves through a bridge only when that recall
reaches the version's ``bridge_min_recall``, and says so in every reply.

A bridge directory: ``manifest.json`` (``hotswap-bridge/1``: both versions' fingerprints,
the corpus it maps into, the recall) and ``map.npy`` (new dim x old dim float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from hotswapd.corpus.files import MAX_MANIFEST_BYTES, CorpusError, regular_file, write_atomically
from hotswapd.corpus.store import Corpus, Hit

BRIDGE_FORMAT = "hotswap-bridge/1"
MAP = "map.npy"
MANIFEST = "manifest.json"
RIDGE = 1e-3


class BridgeManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["hotswap-bridge/1"]
    model: str = Field(max_length=256)
    from_version: str = Field(max_length=256)  # the version whose queries are mapped
    from_fingerprint: str = Field(max_length=128)
    to_version: str = Field(max_length=256)  # the version whose corpus is searched
    to_fingerprint: str = Field(max_length=128)
    corpus: str = Field(max_length=4096)  # that corpus's directory
    kind: Literal["orthogonal", "affine"]
    from_dim: PositiveInt
    to_dim: PositiveInt
    recall_at_10: float = Field(ge=0, le=1)
    fitted_on: PositiveInt
    held_out: PositiveInt
    created: float = 0.0


def fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Literal["orthogonal", "affine"]]:
    """The map W (source dim x target dim) with source @ W ~ target."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape[1] == target.shape[1]:
        u, _, vt = np.linalg.svd(source.T @ target)
        return (u @ vt).astype(np.float32), "orthogonal"
    gram = source.T @ source + RIDGE * np.eye(source.shape[1])
    return np.linalg.solve(gram, source.T @ target).astype(np.float32), "affine"


def recall_at_k(truth_queries: np.ndarray, truth_corpus: np.ndarray, mapped_queries: np.ndarray, mapped_corpus: np.ndarray, k: int = 10) -> float:
    """How many of each query's own top-k (new version, new corpus vectors) the bridged
    search finds (mapped query, old corpus vectors), on average."""
    k = min(k, truth_corpus.shape[0])
    truth = np.argsort(-(truth_queries @ truth_corpus.T), axis=1)[:, :k]
    mapped = _normalised(mapped_queries)
    got = np.argsort(-(mapped @ mapped_corpus.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got, strict=True)]))


def write_bridge(directory: Path, matrix: np.ndarray, manifest: BridgeManifest) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / MAP, matrix.astype("<f4"), allow_pickle=False)
    write_atomically(directory / MANIFEST, manifest.model_dump_json(indent=1).encode())


def read_bridge(directory: Path) -> tuple[BridgeManifest, np.ndarray]:
    try:
        with open(regular_file(directory / MANIFEST), "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
        manifest = BridgeManifest.model_validate_json(raw)
        matrix = np.load(regular_file(directory / MAP), mmap_mode="r", allow_pickle=False)  # its header is checked before any copy
    except FileNotFoundError as exc:
        raise CorpusError(f"{directory} is not a bridge: {Path(exc.filename or '').name} is missing") from None
    except ValidationError as exc:
        raise CorpusError(f"{directory / MANIFEST}: {exc.errors()[0]['msg']}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise CorpusError(f"{directory}: unreadable bridge ({type(exc).__name__}: {exc})") from None
    if matrix.dtype != np.float32 or matrix.shape != (manifest.from_dim, manifest.to_dim) or not np.isfinite(matrix).all():
        raise CorpusError(f"{directory / MAP}: a {matrix.dtype} {matrix.shape} map; its manifest says {manifest.from_dim} x {manifest.to_dim} float32")
    return manifest, np.array(matrix)


class BridgedCorpus:
    """Another version's corpus, searched with this version's queries mapped into its space."""

    def __init__(self, corpus: Corpus, matrix: np.ndarray, manifest: BridgeManifest, where: Path) -> None:
        self._corpus = corpus
        self._matrix = matrix
        self.manifest = corpus.manifest
        self.bridge = {"to": f"{manifest.model}@{manifest.to_version}", "corpus": str(corpus.where), "recall_at_10": manifest.recall_at_10, "path": str(where)}
        self.where = corpus.where

    @property
    def rows(self) -> int:
        return self._corpus.rows

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[0])  # what a query of this version is

    @property
    def memory_bytes(self) -> int:
        return self._corpus.memory_bytes + int(self._matrix.nbytes)

    def describe(self) -> dict[str, Any]:
        return {**self._corpus.describe(), "dim": self.dim, "bridge": self.bridge}

    def search(self, query: np.ndarray, k: int, *, exact: bool = False, precision: str | None = None) -> list[Hit]:
        mapped = _normalised(np.asarray(query, dtype=np.float32).reshape(1, -1) @ self._matrix)[0]
        return self._corpus.search(mapped, k, exact=exact, precision=precision)

    def acquire(self) -> bool:
        return self._corpus.acquire()

    def release(self) -> None:
        self._corpus.release()

    def close(self) -> None:
        self._corpus.close()


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

