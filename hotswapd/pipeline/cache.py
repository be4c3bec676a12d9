"""The embedding cache: an LRU of vectors bounded in bytes.

A key is the version's vector identity (weights digest, backend, precision and options,
max_seq_length, ...), the normalisation flag and the text. A switch therefore can never
serve a vector of another version: another version has another fingerprint or options.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.config.schema import Config
    from hotswapd.pipeline.disk_cache import DiskCache

ENTRY_OVERHEAD = 100  # bytes per entry beyond its vector and key: dict slot, bytes headers

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class EmbeddingCache:
    def __init__(self, max_bytes: int, disk: DiskCache | None = None) -> None:
        self.max_bytes = max_bytes
        self.disk = disk
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.disk is not None

    @staticmethod
    def key(version: bytes, normalize: bool, text: str | bytes) -> bytes:
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16, key=version + bytes([normalize])).digest()

    def memory_lookup(self, keys: list[bytes]) -> list[bytes | None]:
        """The in-memory tier only (cheap: the socket thread calls it); not counted."""
        with self._lock:
            found = []
            for key in keys:
                vector = self._entries.get(key)
                if vector is not None:
                    self._entries.move_to_end(key)
                found.append(vector)
        return found

    def disk_lookup(self, keys: list[bytes], found: list[bytes | None]) -> list[bytes | None]:
        """Fill the gaps of ``found`` from the sqlite tier (disk I/O: not on the socket thread)."""
        if self.disk is None:
            return found
        stored = {key: blob for key, blob in self.disk.get_many([key for key, vector in zip(keys, found, strict=True) if vector is None]).items() if _finite_vector(blob)}
        self._remember(stored)
        return [vector if vector is not None else stored.get(key) for key, vector in zip(keys, found, strict=True)]

    def count(self, hits: int, misses: int) -> None:
        with self._lock:
            self.stats.hits += hits
            self.stats.misses += misses

    def remember(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Store in the in-memory tier."""
        self._remember({key: row.tobytes() for key, row in zip(keys, vectors, strict=True)})

    def persist(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Store in the sqlite tier, if there is one (disk I/O)."""
        if self.disk is not None and keys:
            self.disk.put_many([(key, row.tobytes()) for key, row in zip(keys, vectors, strict=True)])

    def _remember(self, blobs: dict[bytes, bytes]) -> None:
        with self._lock:
            for key, blob in blobs.items():
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= _cost(key, old)
                self._entries[key] = blob
                self._bytes += _cost(key, blob)
            self._trim()

    def _trim(self) -> None:
        """Drop least recently used entries until within the bound; call with the lock held."""
        while self._bytes > self.max_bytes and self._entries:
            key, blob = self._entries.popitem(last=False)
            self._bytes -= _cost(key, blob)
            self.stats.evictions += 1

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._trim()

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.stats.hits,
                "misses": self.stats.misses,
                "evictions": self.stats.evictions,
                "persistent": str(self.disk.path) if self.disk else None,
            }


def _cost(key: bytes, blob: bytes) -> int:
    return len(blob) + len(key) + ENTRY_OVERHEAD


def _finite_vector(blob: bytes) -> bool:
    """A stored row that can be a vector: whole float32 values, all finite, not all zero."""
    if not blob or len(blob) % 4:
        return False
    import numpy as np

    values = np.frombuffer(blob, dtype="<f4")
    return bool(np.isfinite(values).all() and values.any())


def embedding_cache(config: Config) -> EmbeddingCache:
    """The embedding cache the config asks for; without its disk tier if that cannot open."""
    from hotswapd.host import paths
    from hotswapd.pipeline.disk_cache import DiskCache

    disk = None
    if config.cache.persist:
        try:
            disk = DiskCache(paths.cache_dir() / "embeddings.sqlite", int(config.cache.persist_max_mb * 2**20))
        except (OSError, sqlite3.Error) as exc:  # locked by another process, unwritable: serve without it
            log.error("persistent cache unavailable (%s); serving with the in-memory cache only", exc)
    return EmbeddingCache(int(config.cache.max_mb * 2**20), disk)
