"""An encode request's path past the registry: the cache, then the batcher, then the backend.

Misses go to the :class:`~hotswapd.daemon.batching.Batcher` as one request of their own;
hits are copied from the cache. Every vector that leaves is checked: a NaN, infinite or
all-zero vector is an error, never an answer, and is never cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hotswapd.daemon.batching import Batcher, BatchLimits, BatchSink
from hotswapd.daemon.cache import EmbeddingCache
from hotswapd.errors import InferenceError

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.daemon.registry import LoadedVersion


def run_backend(loaded: LoadedVersion, texts: list[str], normalize: bool) -> np.ndarray:
    """One forward pass through the version's backend, as a little-endian float32 matrix."""
    import numpy as np

    try:
        vectors = loaded.embedder.encode(texts, normalize=normalize)
    except Exception as exc:  # the backend's own failure, whatever its type, is reported to the caller
        raise InferenceError(f"{loaded.model}@{loaded.version} failed to encode: {type(exc).__name__}: {exc}") from exc
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise InferenceError(f"{loaded.model}@{loaded.version} returned shape {vectors.shape} for {len(texts)} texts")
    return vectors


def check_vectors(loaded: LoadedVersion, vectors: np.ndarray) -> None:
    import numpy as np

    finite = np.isfinite(vectors).all(axis=1)
    nonzero = np.any(vectors != 0, axis=1)
    if not (finite.all() and nonzero.all()):
        bad = int(np.flatnonzero(~(finite & nonzero))[0])
        raise InferenceError(f"{loaded.model}@{loaded.version} produced an unusable vector (NaN, infinite or zero) for text {bad}")


class Inference:
    def __init__(self, cache: EmbeddingCache, on_batch: BatchSink) -> None:
        self.cache = cache
        self.batcher = Batcher(run_backend, on_batch)

    def encode(self, loaded: LoadedVersion, texts: Sequence[str], normalize: bool, limits: BatchLimits) -> tuple[np.ndarray, int]:
        """The vectors of ``texts`` in order, and how many came from the cache."""
        import numpy as np

        if not self.cache.enabled:
            vectors = self.batcher.encode(loaded, texts, normalize, limits)
            check_vectors(loaded, vectors)
            return vectors, 0
        keys = [EmbeddingCache.key(loaded.vector_identity, normalize, text) for text in texts]
        found = self.cache.get_many(keys)
        missing = [index for index, vector in enumerate(found) if vector is None]
        if not missing:
            return np.frombuffer(b"".join(found), dtype="<f4").reshape(len(texts), -1), len(texts)  # type: ignore[arg-type]
        fresh = self.batcher.encode(loaded, [texts[i] for i in missing], normalize, limits)
        check_vectors(loaded, fresh)
        self.cache.put_many([keys[i] for i in missing], fresh)
        if len(missing) == len(texts):
            return fresh, 0
        out = np.empty((len(texts), fresh.shape[1]), dtype="<f4")
        out[missing] = fresh
        for index, vector in enumerate(found):
            if vector is not None:
                out[index] = np.frombuffer(vector, dtype="<f4")
        return out, len(texts) - len(missing)

    def stop(self) -> None:
        self.batcher.stop()
