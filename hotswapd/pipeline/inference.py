"""An encode request's path past the registry: the cache, then the batcher, then the backend.

:meth:`Inference.submit` never blocks: the in-memory cache is consulted on the caller's
(socket) thread, the sqlite tier, if any, on a cache I/O thread, and the misses go to the
:class:`~hotswapd.pipeline.batching.Batcher` as one request of their own. The answer is
assembled on the inference thread and handed to a callback. Every vector that leaves is
checked: a NaN, infinite or all-zero vector is an error, never an answer, and is never
cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from hotswapd.pipeline.batching import Batcher, BatchLimits, BatchSink, BatchTiming, Coefficients, CostSink, Done, Text, as_str
from hotswapd.pipeline.cache import EmbeddingCache
from hotswapd.errors import InferenceError

T = TypeVar("T")
TOKENIZE_SLICE = 256  # texts tokenised at a time, between looks at whether the request still stands


class Rows(NamedTuple):
    """A request's vectors, in its texts' order, and how they were made."""

    vectors: np.ndarray
    cached: int  # rows served by the cache
    timing: BatchTiming | None = None  # the batch that computed the rest, if one did
    computed: Sequence[int] = ()  # which rows a batch computed (the others came from the cache)

# Called once per request: (Rows, None) or (None, error).
Answer = Callable[["Rows | None", "BaseException | None"], None]

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.pipeline.deadline import Deadline
    from hotswapd.pipeline.loaded import LoadedVersion


def run_backend(loaded: LoadedVersion, texts: list[str], normalize: bool, tokens: Sequence[Any] | None = None) -> np.ndarray:
    """One forward pass through the version's backend, as a little-endian float32 matrix
    (on ``tokens``, the texts as its ``tokenize`` gave them, when given)."""
    import numpy as np

    try:
        if tokens is not None and loaded.caps.encode_tokens is not None:
            vectors = loaded.caps.encode_tokens(tokens, normalize=normalize)
        else:
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
    # A reranker's "vector" is its logit, and 0.0 is a score like any other.
    nonzero = np.any(vectors != 0, axis=1) if loaded.config.task != "rerank" else finite
    if not (finite.all() and nonzero.all()):
        bad = int(np.flatnonzero(~(finite & nonzero))[0])
        raise InferenceError(f"{loaded.model}@{loaded.version} produced an unusable vector (NaN, infinite or zero) for text {bad}")


class Inference:
    def __init__(
        self, cache: EmbeddingCache, on_batch: BatchSink, cache_io: Executor | None = None, on_cost: CostSink | None = None,
        coefficients: Coefficients | None = None, offload: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.cache = cache
        self.batcher = Batcher(run_backend, on_batch, on_cost, coefficients)
        # Where a large request is tokenised (the daemon's tokens pool); without one, the
        # backend tokenises each batch on the inference thread.
        self._offload = offload
        # Where the sqlite tier is read and written (disk I/O stays off the socket and
        # inference threads); without one, it runs inline.
        self._cache_io = cache_io

    def submit(self, loaded: LoadedVersion, texts: Sequence[Text], normalize: bool, limits: BatchLimits, answer: Answer, deadline: Deadline | None = None, *, use_cache: bool = True) -> None:
        """Start encoding ``texts``; ``answer`` is called once, from whichever thread
        finishes the work (often the inference thread). Never blocks. ``use_cache=False``
        neither reads nor fills the cache."""
        if not (self.cache.enabled and use_cache):
            self._enqueue(loaded, texts, normalize, limits, lambda rows, error, timing: self._fresh(loaded, rows, error, timing, answer), deadline)
            return
        keys = [EmbeddingCache.key(loaded.vector_identity, normalize, text) for text in texts]
        found = self.cache.memory_lookup(keys)
        if self.cache.disk is not None and any(vector is None for vector in found):
            self._io(lambda: self._after_lookup(loaded, texts, normalize, limits, answer, deadline, keys, self.cache.disk_lookup(keys, found)), answer)
        else:
            self._after_lookup(loaded, texts, normalize, limits, answer, deadline, keys, found)

    def call(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``work`` on the inference thread, never beside a batch (warm-up, probes)."""
        return self.batcher.call(work, timeout)

    def call_if_idle(self, work: Callable[[], T], timeout: float) -> tuple[bool, T | None]:
        """Run ``work`` on the inference thread only if that delays no request."""
        return self.batcher.call_if_idle(work, timeout)

    def call_soon(self, work: Callable[[], T]) -> Future[T]:
        return self.batcher.call_soon(work)

    def _io(self, work: Callable[[], None], answer: Answer) -> None:
        def guarded() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 -- the request gets the error, the thread lives
                answer(None, exc)

        if self._cache_io is None:
            guarded()
        else:
            self._cache_io.submit(guarded)

    def _after_lookup(self, loaded: LoadedVersion, texts: Sequence[Text], normalize: bool, limits: BatchLimits, answer: Answer, deadline: Deadline | None, keys: list[bytes], found: list[bytes | None]) -> None:
        import numpy as np

        # A cached row is used only if it is a whole vector of this version's dimension: the
        # sqlite tier is a file on disk, and anything may have written it.
        width = loaded.embedder.dimension * 4
        found = [vector if vector is not None and len(vector) == width else None for vector in found]
        missing = [index for index, vector in enumerate(found) if vector is None]
        self.cache.count(len(texts) - len(missing), len(missing))
        if not missing:
            answer(Rows(np.frombuffer(b"".join(found), dtype="<f4").reshape(len(texts), -1), len(texts), None, ()), None)
            return

        def fresh(rows: np.ndarray | None, error: BaseException | None, timing: BatchTiming | None) -> None:
            rows = _checked(loaded, rows, error, answer)
            if rows is None:
                return
            missing_keys = [keys[i] for i in missing]
            self.cache.remember(missing_keys, rows)
            if self.cache.disk is not None:
                self._io(lambda: self.cache.persist(missing_keys, rows), lambda result, error: None)
            if len(missing) == len(texts):
                answer(Rows(rows, 0, timing, missing), None)
            else:
                answer(Rows(_merge(rows, missing, found), len(texts) - len(missing), timing, missing), None)

        self._enqueue(loaded, [texts[i] for i in missing], normalize, limits, fresh, deadline)

    def _enqueue(self, loaded: LoadedVersion, texts: Sequence[Text], normalize: bool, limits: BatchLimits, done: Done, deadline: Deadline | None) -> None:
        """To the batcher. A request that will be split is tokenised first, off this thread,
        when its backend can hand the tokens over: its pieces are then cut by true token
        counts (pieces of 64 BBC sentences 96.5 % useful tokens, against 90.5 % by an
        estimate), and the inference thread does not tokenise it again."""
        tokenize = loaded.caps.tokenize
        offload = self._offload
        if tokenize is None or offload is None or len(texts) <= limits.max_batch_size:
            self.batcher.submit(loaded, texts, normalize, limits, done, deadline)
            return
        strs = as_str(list(texts))
        tokens: list[Any] = []

        def next_slice() -> None:
            # A slice at a time, each its own task on the tokens pool: a large request
            # neither holds the pool from the others (HTTP usage counts run there) nor goes
            # on tokenising once its client has gone.
            stopped = deadline.stopped() if deadline is not None else None
            if stopped is not None:  # withdrawn, or past its deadline, while it waited
                done(None, stopped, None)
                return
            try:
                part = strs[len(tokens) : len(tokens) + TOKENIZE_SLICE]
                got = tokenize(part)
                if len(got) != len(part):
                    raise ValueError(f"{len(part)} texts came back as {len(got)}")
                tokens.extend(got)
                if len(tokens) < len(strs):
                    offload(next_slice)
                    return
                self.batcher.submit(loaded, texts, normalize, limits, done, deadline, tokens=tokens)
            except BaseException as exc:  # noqa: BLE001 -- a Rust panic is a BaseException: the request still gets its answer
                done(None, InferenceError(f"{loaded.model}@{loaded.version} failed to tokenise: {type(exc).__name__}: {exc}"), None)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise

        offload(next_slice)

    @staticmethod
    def _fresh(loaded: LoadedVersion, rows: np.ndarray | None, error: BaseException | None, timing: BatchTiming | None, answer: Answer) -> None:
        rows = _checked(loaded, rows, error, answer)
        if rows is not None:
            answer(Rows(rows, 0, timing, range(len(rows))), None)

    def stop(self) -> None:
        self.batcher.stop()

    def running(self) -> bool:
        return self.batcher.running()


def _checked(loaded: LoadedVersion, rows: np.ndarray | None, error: BaseException | None, answer: Answer) -> np.ndarray | None:
    """The rows if they are usable; otherwise the request is answered with the error and None returned."""
    if error is not None or rows is None:
        answer(None, error)
        return None
    try:
        check_vectors(loaded, rows)
    except InferenceError as exc:
        answer(None, exc)
        return None
    return rows


def _merge(fresh: np.ndarray, missing: list[int], found: list[bytes | None]) -> np.ndarray:
    import numpy as np

    out = np.empty((len(found), fresh.shape[1]), dtype="<f4")
    out[missing] = fresh
    for index, vector in enumerate(found):
        if vector is not None:
            out[index] = np.frombuffer(vector, dtype="<f4")
    return out
