"""Dynamic batching: requests for the same version from different clients share a forward pass.

Request threads call :meth:`Batcher.encode`, which splits a request into pieces within the
version's limits (``max_batch_size`` texts, ``max_batch_tokens`` estimated tokens), queues
them and waits. One inference thread takes the oldest piece, gathers every queued piece of
the same version and normalisation that still fits the limits, and runs them as one
batch. It waits up to ``max_wait_ms`` for more only when recent batches of that version
merged several requests (and only for as many as they did), so a lone client never pays
the wait, and a crowd gets fuller batches. Backends sort a batch by length before padding, so a merged batch of short
and long texts is padded per length group, not to its longest text.

A failure of a merged batch is retried request by request, so one client's bad text fails
only that client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.daemon.registry import LoadedVersion

log = logging.getLogger(__name__)
RECENT_BATCHES = 4  # a crowd that just thinned out still gets a short wait, for a few batches
BatchSink = Callable[[str, str, int, int], None]  # model, version, texts, requests


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float


def estimated_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 bytes a token, plus the special tokens): the daemon
    core does not know the backend's tokenizer, and a bound needs no more precision."""
    return len(text.encode("utf-8", "surrogatepass")) // 4 + 2


@dataclass
class _Piece:
    loaded: LoadedVersion
    texts: list[str]
    tokens: int
    normalize: bool
    limits: BatchLimits
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Any] = field(default_factory=Future)

    @property
    def key(self) -> tuple[int, bool]:
        return id(self.loaded), self.normalize


def split(texts: Sequence[str], limits: BatchLimits) -> list[tuple[list[str], int]]:
    """Consecutive pieces of at most max_batch_size texts and max_batch_tokens tokens each."""
    pieces: list[tuple[list[str], int]] = []
    current: list[str] = []
    tokens = 0
    for text in texts:
        cost = estimated_tokens(text)
        if current and (len(current) >= limits.max_batch_size or tokens + cost > limits.max_batch_tokens):
            pieces.append((current, tokens))
            current, tokens = [], 0
        current.append(text)
        tokens += cost
    pieces.append((current, tokens))
    return pieces


class Batcher:
    def __init__(self, run: Callable[[LoadedVersion, list[str], bool], np.ndarray], on_batch: BatchSink) -> None:
        self._run = run
        self._on_batch = on_batch
        self._queue: deque[_Piece] = deque()
        self._cond = threading.Condition()
        # Requests merged by the last few batches of each version: how much company to expect.
        self._recent: dict[tuple[int, bool], deque[int]] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hotswapd-infer", daemon=True)
        self._thread.start()

    def encode(self, loaded: LoadedVersion, texts: Sequence[str], normalize: bool, limits: BatchLimits) -> np.ndarray:
        """Blocks the calling (request) thread until all its pieces are done; rows in input order."""
        import numpy as np

        pieces = [_Piece(loaded, part, tokens, normalize, limits) for part, tokens in split(texts, limits)]
        with self._cond:
            self._queue.extend(pieces)
            self._cond.notify()
        results = [piece.future.result() for piece in pieces]
        return results[0] if len(results) == 1 else np.concatenate(results)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            self._execute(batch)

    def _next_batch(self) -> list[_Piece] | None:
        """Called with the lock held; waits for work, then for company if company is likely."""
        while True:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            oldest = self._queue[0]
            batch = self._gather(oldest)
            expected = max(self._recent.get(oldest.key, (1,)))
            remaining = oldest.enqueued + oldest.limits.max_wait_ms / 1000 - time.monotonic()
            full = sum(len(p.texts) for p in batch) >= oldest.limits.max_batch_size
            if full or len(batch) >= expected or remaining <= 0 or self._stopping:
                for piece in batch:
                    self._queue.remove(piece)
                return batch
            self._cond.wait(remaining)

    def _gather(self, oldest: _Piece) -> list[_Piece]:
        limits = oldest.limits
        batch, texts, tokens = [], 0, 0
        for piece in self._queue:
            if piece.key != oldest.key:
                continue
            if batch and (texts + len(piece.texts) > limits.max_batch_size or tokens + piece.tokens > limits.max_batch_tokens):
                break
            batch.append(piece)
            texts += len(piece.texts)
            tokens += piece.tokens
        return batch

    def _execute(self, batch: list[_Piece]) -> None:
        first = batch[0]
        texts = [text for piece in batch for text in piece.texts]
        self._recent.setdefault(first.key, deque(maxlen=RECENT_BATCHES)).append(len(batch))
        try:
            vectors = self._run(first.loaded, texts, first.normalize)
        except Exception as exc:  # noqa: BLE001 -- handed to the requests, which raise it
            if len(batch) == 1:
                first.future.set_exception(exc)
            else:
                log.info("a merged batch of %d requests failed (%s); running them one by one", len(batch), exc)
                for piece in batch:
                    self._execute([piece])
            return
        self._on_batch(first.loaded.model, first.loaded.version, len(texts), len(batch))
        start = 0
        for piece in batch:
            piece.future.set_result(vectors[start : start + len(piece.texts)])
            start += len(piece.texts)
