"""Dynamic batching: requests for the same version from different clients share a forward pass.

The socket thread calls :meth:`Batcher.submit` with a completion callback; it splits a
request into pieces within the version's limits (``max_batch_size`` texts,
``max_batch_tokens`` estimated tokens) and queues them, without waiting. One inference
thread takes the oldest piece, gathers every queued piece of the same version and
normalisation that still fits the limits, runs them as one batch, and hands each request
its rows through its callback (which builds and sends the reply): no thread is parked per
request. It waits up to ``max_wait_ms`` for more only when recent batches of that version
merged several requests (and only for as many as they did), so a lone client never pays
the wait, and a crowd gets fuller batches. Backends sort a batch by length before
padding, so a merged batch of short and long texts is padded per length group.

A failure of a merged batch is retried request by request, so one client's bad text fails
only that client. A piece whose client's deadline has passed, or whose client withdrew it, is dropped unrun. Other work
that must not run beside a batch (a new version's warm-up, agreement probes) goes through
:meth:`Batcher.call`, on the same thread. No exception ends the inference thread.

While a batch runs, :meth:`Batcher.shed` (the daemon's ticker) answers what the queue holds
in vain (:mod:`hotswapd.pipeline.shedding`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hotswapd.errors import Busy
from hotswapd.pipeline import shedding
from hotswapd.pipeline.shedding import Coefficients
from hotswapd.text.decode import utf8_size
from hotswapd.wire.length_order import length_key

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.pipeline.deadline import Deadline

    from hotswapd.pipeline.loaded import LoadedVersion

log = logging.getLogger(__name__)
RECENT_BATCHES = 4  # a crowd that just thinned out still gets a short wait, for a few batches
BatchSink = Callable[[str, str, int, int], None]  # model, version, texts, requests
CostSink = Callable[..., None]  # (texts, UTF-8 bytes, seconds of one batch, key=(model, version))
# Called once per request: (rows in input order, None, how its batch went) or (None, the error, None).
Done = Callable[["np.ndarray | None", "BaseException | None", "BatchTiming | None"], None]
T = TypeVar("T")


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float


Text = str | bytes  # str: decoded once when the request was read (hotswapd.text.decode); bytes from callers that have them


def estimated_tokens(text: Text) -> int:
    """A tokenizer-free estimate (about 4 bytes a token, plus the special tokens): the daemon
    core does not know the backend's tokenizer, and a bound needs no more precision."""
    return utf8_size(text) // 4 + 2




def as_str(texts: list[Text]) -> list[str]:
    return [text.decode("utf-8") if isinstance(text, bytes) else text for text in texts]


@dataclass(frozen=True)
class BatchTiming:
    """How the batch that answered a request went: for its trace span."""

    queue_ms: float  # from the request's arrival in the queue to its batch starting
    inference_ms: float
    batch_texts: int
    batch_requests: int


@dataclass
class _Piece:
    loaded: LoadedVersion
    texts: list[Text]
    tokens: int
    nbytes: int
    normalize: bool
    limits: BatchLimits
    done: Callable[[np.ndarray | None, BaseException | None, BatchTiming | None], None]
    deadline: Deadline | None = None
    collector: _Collector | None = None
    tokenized: list[Any] | None = None  # the texts as the version's tokenize gave them
    enqueued: float = field(default_factory=time.monotonic)

    def dropped(self, now: float) -> BaseException | None:
        """Why this piece must not run any more: its deadline passed, its client withdrew it,
        or a sibling failed."""
        if self.collector is not None and self.collector.failed is not None:
            return self.collector.failed
        return self.deadline.stopped(now) if self.deadline is not None else None

    @property
    def key(self) -> tuple[int, bool]:
        return id(self.loaded), self.normalize


@dataclass
class _Task:
    """Work other than a batch that must run on the inference thread."""

    work: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)
    key: tuple[int, bool] = (0, False)  # never equal to a piece's key: tasks do not merge


class _Collector:
    """Gathers the pieces of one request and calls its ``done`` once, rows in order, when
    every piece is finished: the request holds its version's lease until then, so no piece
    of it ever runs on a closed version. Once a piece fails, the pieces still queued are
    dropped unrun (:attr:`failed`)."""

    def __init__(self, count: int, done: Done, order: list[int] | None = None) -> None:
        self._parts: list[np.ndarray | None] = [None] * count
        self._left = count
        self._done = done
        self._order = order  # the pieces hold the texts in this order; rows go back to the caller's
        self.failed: BaseException | None = None
        self._timing: BatchTiming | None = None  # the last piece's batch: the request waited for it
        self._lock = threading.Lock()

    def piece_done(self, index: int, rows: np.ndarray | None, error: BaseException | None, timing: BatchTiming | None = None) -> None:
        with self._lock:
            if error is not None and self.failed is None:
                self.failed = error
            if timing is not None:
                self._timing = timing
            self._parts[index] = rows
            self._left -= 1
            if self._left:
                return
        if self.failed is not None:
            self._done(None, self.failed, None)
            return
        import numpy as np

        parts = self._parts
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)  # type: ignore[arg-type]
        if self._order is not None:
            restored = np.empty_like(rows)
            restored[self._order] = rows
            rows = restored
        self._done(rows, None, self._timing)


def split(texts: Sequence[Text], limits: BatchLimits, lengths: Sequence[int] | None = None) -> list[tuple[int, int, int, int]]:
    """Consecutive pieces of at most max_batch_size texts and max_batch_tokens tokens each:
    (start, end, tokens, UTF-8 bytes). Tokens are ``lengths`` when the tokenizer counted
    them, else an estimate."""
    pieces: list[tuple[int, int, int, int]] = []
    start = tokens = nbytes = 0
    for index, text in enumerate(texts):
        size = utf8_size(text)
        cost = lengths[index] if lengths is not None else size // 4 + 2  # estimated_tokens
        if index > start and (index - start >= limits.max_batch_size or tokens + cost > limits.max_batch_tokens):
            pieces.append((start, index, tokens, nbytes))
            start, tokens, nbytes = index, 0, 0
        tokens += cost
        nbytes += size
    pieces.append((start, len(texts), tokens, nbytes))
    return pieces


def _tokenized(batch: list[_Piece]) -> list[Any] | None:
    """The batch's texts as its version tokenised them, if every piece came tokenised."""
    if any(piece.tokenized is None for piece in batch):
        return None
    return [tokens for piece in batch for tokens in piece.tokenized]  # type: ignore[union-attr]


class Batcher:
    def __init__(
        # run(loaded, texts, normalize) -> rows, given tokens=[...] too when every piece came tokenised
        self, run: Callable[..., np.ndarray], on_batch: BatchSink, on_cost: CostSink | None = None,
        coefficients: Coefficients | None = None,
    ) -> None:
        self._run = run
        self._on_batch = on_batch
        self._on_cost = on_cost
        self._coefficients = coefficients
        self._busy_until = 0.0  # when the batch running now is expected to end (monotonic)
        self._working = False  # a batch or a task is running (guarded by _cond)
        self.shed_count = 0  # pieces answered busy by shed() (read by tests and metrics)
        self._queue: deque[_Piece | _Task] = deque()
        self._cond = threading.Condition()
        # Requests merged by the last few batches of each version: how much company to expect.
        self._recent: dict[tuple[int, bool], deque[int]] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hotswapd-infer", daemon=True)
        self._thread.start()

    def submit(
        self, loaded: LoadedVersion, texts: Sequence[Text], normalize: bool, limits: BatchLimits, done: Done, deadline: Deadline | None = None,
        tokens: Sequence[Any] | None = None,
    ) -> None:
        """Queue a request; ``done`` is called once, on the inference thread, with its rows
        in input order or with its error. Never blocks. ``tokens``: the texts as the
        version's ``tokenize`` gave them (then pieces are cut by true token counts, and the
        model runs on them without tokenising again)."""
        lengths = [len(one) for one in tokens] if tokens is not None else None
        parts = split(texts, limits, lengths)
        order = None
        if len(parts) > 1:
            # Pieces of texts of like length: each is padded to its own longest text, so a
            # request split in document order padded short sentences to its long ones.
            keys = lengths if lengths is not None else [length_key(text) for text in texts]
            order = sorted(range(len(texts)), key=keys.__getitem__, reverse=True)
            texts = [texts[i] for i in order]
            tokens = [tokens[i] for i in order] if tokens is not None else None
            parts = split(texts, limits, [keys[i] for i in order] if lengths is not None else None)
        collector = _Collector(len(parts), done, order)
        pieces = [
            _Piece(
                loaded, list(texts[start:end]), count, nbytes, normalize, limits,
                lambda rows, error, timing, i=i: collector.piece_done(i, rows, error, timing), deadline, collector,
                tokenized=list(tokens[start:end]) if tokens is not None else None,
            )
            for i, (start, end, count, nbytes) in enumerate(parts)
        ]
        with self._cond:
            self._queue.extend(pieces)
            self._cond.notify()

    def encode(self, loaded: LoadedVersion, texts: Sequence[Text], normalize: bool, limits: BatchLimits) -> np.ndarray:
        """Blocking form of :meth:`submit`, for callers that have a thread to spare."""
        future: Future[np.ndarray] = Future()

        def done(rows: np.ndarray | None, error: BaseException | None, timing: BatchTiming | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(rows)  # type: ignore[arg-type]

        self.submit(loaded, texts, normalize, limits, done)
        return future.result()

    def call(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``work`` on the inference thread between batches and return its result, so
        that it never runs beside a live batch (backends share cores and libraries)."""
        if threading.current_thread() is self._thread:
            return work()
        return self.call_soon(work).result(timeout)

    def call_soon(self, work: Callable[[], T]) -> Future[T]:
        """Queue ``work`` for the inference thread; its future, for a caller that must stay
        able to give up waiting (a periodic benchmark when the daemon stops)."""
        task = _Task(work)
        with self._cond:
            self._queue.append(task)
            self._cond.notify()
        return task.future

    def call_if_idle(self, work: Callable[[], T], timeout: float) -> tuple[bool, T | None]:
        """Run ``work`` on the inference thread if it has nothing to do, ahead of whatever
        arrives meanwhile: ``(True, result)``; ``(False, None)`` at once if it is busy. For
        work that is worth doing only when it delays no request (a load's cost probe)."""
        if threading.current_thread() is self._thread:
            return True, work()
        task = _Task(work)
        with self._cond:
            if self._working or any(isinstance(item, _Piece) for item in self._queue):
                return False, None
            self._queue.appendleft(task)
            self._cond.notify()
        return True, task.future.result(timeout)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            expired: list[tuple[_Piece, BaseException]] = []
            try:
                with self._cond:
                    self._working = False
                    work = self._next_work(expired)
                    self._working = bool(work)
                for piece, why in expired:
                    self._finish(piece, None, why)
                if work is None:
                    return
                if isinstance(work, _Task):
                    self._run_task(work)
                else:
                    self._execute(work)
            except Exception:  # noqa: BLE001 -- the inference thread must outlive any bug
                log.exception("inference loop: unexpected error; carrying on")

    def _next_work(self, expired: list[tuple[_Piece, BaseException]]) -> list[_Piece] | _Task | None:
        """Called with the lock held; waits for work, then for company if company is likely.
        Pieces whose deadline has passed are moved to ``expired``. None: stop."""
        while True:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            self._drop_expired(expired)
            if not self._queue:
                if expired:
                    return [] if not self._stopping else None
                continue
            oldest = self._queue[0]
            if isinstance(oldest, _Task):
                return self._queue.popleft()  # type: ignore[return-value]
            batch = self._gather(oldest)
            expected = max(self._recent.get(oldest.key, (1,)))
            remaining = oldest.enqueued + oldest.limits.max_wait_ms / 1000 - time.monotonic()
            full = sum(len(p.texts) for p in batch) >= oldest.limits.max_batch_size
            if full or len(batch) >= expected or remaining <= 0 or self._stopping:
                for piece in batch:
                    self._queue.remove(piece)
                return batch
            self._cond.wait(remaining)

    def _drop_expired(self, expired: list[tuple[_Piece, BaseException]]) -> None:
        """Move pieces that must not run (deadline passed, withdrawn, a sibling failed) to ``expired``."""
        now = time.monotonic()
        if any(isinstance(item, _Piece) and item.dropped(now) is not None for item in self._queue):
            kept: deque[_Piece | _Task] = deque()
            for item in self._queue:
                why = item.dropped(now) if isinstance(item, _Piece) else None
                if why is not None:
                    expired.append((item, why))  # type: ignore[arg-type]
                else:
                    kept.append(item)
            self._queue = kept

    def shed(self) -> int:
        """Answer now what the queue holds in vain (any thread; the daemon's ticker): pieces
        that must not run (deadline passed, client gone, a sibling failed) with their
        reason, and pieces that the queue ahead of them, priced per version, would take past
        their deadline with ``busy``. Returns how many were answered."""
        with self._cond:
            now = time.monotonic()
            pieces = [item for item in self._queue if isinstance(item, _Piece)]
            whys = shedding.doomed(pieces, now, max(now, self._busy_until), self._coefficients) if pieces else {}
            doomed = [(piece, whys[id(piece)]) for piece in pieces if id(piece) in whys]
            if doomed:
                self._queue = deque(item for item in self._queue if id(item) not in whys)
                self.shed_count += sum(isinstance(why, Busy) for _, why in doomed)
        for piece, why in doomed:
            self._finish(piece, None, why)
        return len(doomed)

    def _gather(self, oldest: _Piece) -> list[_Piece]:
        limits = oldest.limits
        batch: list[_Piece] = []
        texts = tokens = 0
        for piece in self._queue:
            if piece.key != oldest.key or not isinstance(piece, _Piece):
                continue
            if batch and (texts + len(piece.texts) > limits.max_batch_size or tokens + piece.tokens > limits.max_batch_tokens):
                break
            batch.append(piece)
            texts += len(piece.texts)
            tokens += piece.tokens
        return batch

    @staticmethod
    def _run_task(task: _Task) -> None:
        try:
            task.future.set_result(task.work())
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller, who raises it
            task.future.set_exception(exc)

    def _execute(self, batch: list[_Piece]) -> None:
        now = time.monotonic()
        for piece in [piece for piece in batch if piece.dropped(now) is not None]:
            self._finish(piece, None, piece.dropped(now))
            batch.remove(piece)
        if not batch:
            return
        first = batch[0]
        # Request texts arrive decoded once (hotswapd.text.decode); a caller that queued bytes
        # has them decoded here.
        raw = [text for piece in batch for text in piece.texts]
        texts = as_str(raw)
        self._recent.setdefault(first.key, deque(maxlen=RECENT_BATCHES)).append(len(batch))
        key = (first.loaded.model, first.loaded.version)
        if self._coefficients is not None:
            per_text, per_byte = self._coefficients(key)
            self._busy_until = time.monotonic() + per_text * len(texts) + per_byte * sum(piece.nbytes for piece in batch)
        tokenized = _tokenized(batch)
        started = time.perf_counter()
        try:
            if tokenized is None:
                vectors = self._run(first.loaded, texts, first.normalize)
            else:
                vectors = self._run(first.loaded, texts, first.normalize, tokens=tokenized)
        except Exception as exc:  # noqa: BLE001 -- handed to the requests, which answer with it
            self._busy_until = 0.0
            if len(batch) == 1:
                self._finish(first, None, exc)
            else:
                log.info("a merged batch of %d requests failed (%s); running them one by one", len(batch), exc)
                for piece in batch:
                    self._execute([piece])
            return
        try:
            self._busy_until = 0.0
            if not first.loaded.timed:
                first.loaded.timed = True  # this batch paid for its set-up: a time that prices nothing
            elif self._on_cost is not None:
                self._on_cost(len(texts), sum(piece.nbytes for piece in batch), time.perf_counter() - started, key=key)
            self._on_batch(first.loaded.model, first.loaded.version, len(texts), len(batch))
        except Exception:  # noqa: BLE001 -- a metrics failure must not cost the answers
            log.exception("recording a batch failed")
        start = 0
        inference_ms = (time.perf_counter() - started) * 1000
        for piece in batch:
            timing = BatchTiming(round((now - piece.enqueued) * 1000, 3), round(inference_ms, 3), len(texts), len(batch))
            self._finish(piece, vectors[start : start + len(piece.texts)], None, timing)
            start += len(piece.texts)

    @staticmethod
    def _finish(piece: _Piece, rows: np.ndarray | None, error: BaseException | None, timing: BatchTiming | None = None) -> None:
        try:
            piece.done(rows, error, timing)
        except Exception:  # noqa: BLE001 -- one request's reply path must not fail the others
            log.exception("answering a request of %s@%s failed", piece.loaded.model, piece.loaded.version)
