"""Admission control: a bound on encode work accepted and not yet answered.

Without it a crowd of large requests queues until each client's timeout and holds its
texts in memory all that while (64 clients x 1 MB: half timed out, RSS +516 MiB). With
it, a request that would take the queue past ``daemon.max_queue_texts`` texts or
``daemon.max_queue_mb`` of text is refused at once with a typed ``busy`` error carrying a
retry hint, so callers back off instead of waiting blind. A lone request larger than the
bound is still admitted into an empty queue: every request valid under the per-request
limits can be served.

The bound in texts and bytes says nothing of time: 64 one-megabyte texts fit 64 MiB but
take half a minute to tokenize. So admission also knows what work costs: the inference
thread reports every batch (texts, characters, seconds), a least-squares fit of
``seconds = c + a * texts + b * chars`` over the last batches prices the queue, and a request
whose caller's deadline would pass before the queued work ahead of it and its own are
done is refused at once with ``busy``, not admitted to time out.

Each version is priced by its own batches: an int8 export and an fp32 model of one name
differ fourfold. A version that has run no batch yet is priced by the probe its load ran
(:mod:`hotswapd.core.cost_prior`), so a burst on a cold daemon is priced too; one never
measured at all falls back to every version's batches together. A request that alone
would take longer than its deadline is refused with the estimate (retrying cannot help);
queued work whose deadline becomes unreachable is answered by the batcher's shedding,
which prices the queue with :meth:`Admission.coefficients`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hotswapd.errors import Busy, DeadlineExceeded

MB = 2**20
RETRY_FLOOR = 0.05  # seconds: a retry hint is never shorter than this
RETRY_CEILING = 5.0
COST_WINDOW = 64  # batches the cost model is fitted on, per version
Key = tuple[str, str]  # (model, version)
PRIOR_UNTIL_BATCHES = 4  # a version's load probe counts until it has run this many batches of its own
RECHECK_SECONDS = 10.0  # an estimate older than this refuses nothing outright (see _measured_lately)
DEADLINE_MARGIN = 0.9  # admit only work expected to finish within this share of its deadline


@dataclass(frozen=True)
class QueueLimits:
    max_texts: int
    max_bytes: int


class Ticket:
    """Admitted work; :meth:`release` (once, idempotent) when its reply is built."""

    __slots__ = ("_admission", "texts", "nbytes", "key", "_released")

    def __init__(self, admission: Admission, texts: int, nbytes: int, key: Key | None) -> None:
        self._admission = admission
        self.texts = texts
        self.nbytes = nbytes
        self.key = key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)


class Admission:
    def __init__(self, limits: QueueLimits, on_drained: Callable[[], object] | None = None) -> None:
        self.limits = limits
        self._on_drained = on_drained
        self._texts = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.refused = 0
        # What the periodic benchmark reads to stay out of the way: requests so far, the last one's time.
        self.admitted = 0
        self.last_admitted = 0.0
        # Recent completions (monotonic time, texts) to estimate how fast room frees up.
        self._done: deque[tuple[float, int]] = deque(maxlen=256)
        self._batches: dict[Key | None, deque[tuple[int, int, float]]] = {}  # None: every version's
        self._priors: dict[Key | None, deque[tuple[int, int, float]]] = {}  # what load probes measured
        self._observed_at: dict[Key, float] = {}  # when each version's work was last timed (monotonic)
        self._costs: dict[Key | None, tuple[float, float, float]] = {}  # fitted (seconds per batch, per text, per byte); dropped on a new batch
        self._queued: dict[Key | None, list[int]] = {}  # texts, bytes queued per version

    def admit(self, texts: int, nbytes: int, deadline_seconds: float | None = None, key: Key | None = None) -> Ticket:
        """A ticket for the work of version ``key``, or :class:`Busy` if it would pass the
        bound, or would not be done within ``deadline_seconds`` behind the work already
        queued; :class:`DeadlineExceeded` if it alone would not."""
        with self._lock:
            empty = self._texts == 0
            if not empty and (self._texts + texts > self.limits.max_texts or self._bytes + nbytes > self.limits.max_bytes):
                self._refuse(
                    f"hotswapd is busy: {self._texts} texts ({self._bytes / MB:.1f} MiB) already queued, the bound is "
                    f"{self.limits.max_texts} texts / {self.limits.max_bytes / MB:g} MiB (daemon.max_queue_texts, "
                    f"daemon.max_queue_mb); retry later",
                    texts,
                )
            if deadline_seconds is not None:
                own = self._seconds_for(key, texts, nbytes)
                if own > deadline_seconds * DEADLINE_MARGIN and self._measured_lately(key):
                    self.refused += 1
                    raise DeadlineExceeded(
                        f"this request alone would take about {own:.1f} s ({texts} texts, at what this version's "
                        f"work has cost), past its deadline of {deadline_seconds:g} s: send fewer texts at a time, "
                        "or allow a longer timeout"
                    )
                wait = own + sum(self._seconds_for(queued_key, *queued) for queued_key, queued in self._queued.items())
                if not empty and wait > deadline_seconds * DEADLINE_MARGIN:
                    self._refuse(
                        f"hotswapd is busy: the work queued ahead would take about {wait:.1f} s, past this "
                        f"request's deadline of {deadline_seconds:g} s; retry later",
                        texts,
                    )
            self._texts += texts
            self._bytes += nbytes
            queued = self._queued.setdefault(key, [0, 0])
            queued[0] += texts
            queued[1] += nbytes
            self.admitted += 1
            self.last_admitted = time.monotonic()
        return Ticket(self, texts, nbytes, key)

    @property
    def queued_texts(self) -> int:
        return self._texts

    def _refuse(self, message: str, texts: int) -> None:
        """Raise Busy (lock held)."""
        self.refused += 1
        raise Busy(message, retry_after=self._retry_after(texts))

    def observe(self, texts: int, chars: int, seconds: float, key: Key | None = None, *, prior: bool = False) -> None:
        """One batch's cost (of version ``key``), reported by the inference thread, or with
        ``prior`` by a load's probe: a version is priced by its probe only until batches of
        its own traffic have run (cheap: the model is refitted only when pricing needs it)."""
        with self._lock:
            books = self._priors if prior else self._batches
            if key is not None:
                self._observed_at[key] = time.monotonic()
            for book in (key, None) if key is not None else (None,):
                books.setdefault(book, deque(maxlen=COST_WINDOW)).append((texts, chars, seconds))
            self._costs.clear()  # a version priced by the fallback moves with it too

    def forget(self, key: Key) -> None:
        """A version (re)loading: what it cost before says nothing of the files it loads now."""
        with self._lock:
            self._batches.pop(key, None)
            self._priors.pop(key, None)
            self._observed_at.pop(key, None)
            self._costs.clear()

    def coefficients(self, key: Key | None) -> tuple[float, float]:
        """Seconds per text and per UTF-8 byte of version ``key``'s work, as measured (what
        one more text adds to a batch: the batcher prices pieces joining batches)."""
        with self._lock:
            return self._coefficients(key)[1:]

    def _coefficients(self, key: Key | None) -> tuple[float, float, float]:
        """Lock held. A version's own batches with its load's probe (until a few batches of
        its own traffic have run: a probe of short and long texts tells per-text from
        per-byte cost where a few like batches cannot), else every version's: an ensemble,
        a remote backend, or a load still under way."""
        cost = self._costs.get(key)
        if cost is None:
            for book in (key, None):
                own = list(self._batches.get(book, ()))
                if len(own) < PRIOR_UNTIL_BATCHES or not separable(own):
                    own += self._priors.get(book, ())
                if own:
                    cost = fit_cost(own)
                    break
            else:
                cost = (0.0, 0.0, 0.0)
            self._costs[key] = cost
        return cost

    def _measured_lately(self, key: Key | None) -> bool:
        """Lock held. Whether ``key``'s own work was timed lately: only then is an estimate
        trusted to refuse a request outright. Another version's batches say little of it, and
        a refusal measures nothing, so an estimate left from a slow spell would refuse for
        ever: past RECHECK_SECONDS without a batch of its own, a request runs and is timed."""
        seen = self._observed_at.get(key) if key is not None else None
        return seen is not None and time.monotonic() - seen < RECHECK_SECONDS

    def _seconds_for(self, key: Key | None, texts: int, nbytes: int) -> float:
        """Lock held."""
        per_batch, per_text, per_byte = self._coefficients(key)
        return per_batch * -(-texts // TEXTS_PER_BATCH) + per_text * texts + per_byte * nbytes

    def set_limits(self, limits: QueueLimits) -> None:
        with self._lock:
            self.limits = limits

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._texts -= ticket.texts
            self._bytes -= ticket.nbytes
            queued = self._queued.get(ticket.key)
            if queued is not None:
                queued[0] -= ticket.texts
                queued[1] -= ticket.nbytes
                if queued[0] <= 0:
                    del self._queued[ticket.key]
            self._done.append((time.monotonic(), ticket.texts))
            drained = self._texts == 0  # the daemon then checks what the work grew (hotswapd.core.burst_memory)
        if drained and self._on_drained is not None:
            self._on_drained()

    def _retry_after(self, texts: int) -> float:
        """Seconds until about ``texts`` texts of room free up, at the recent rate (lock held)."""
        if len(self._done) < 2:
            return 0.1
        span = self._done[-1][0] - self._done[0][0]
        rate = sum(count for _, count in self._done) / span if span > 0 else 0.0
        if rate <= 0:
            return 0.1
        return min(RETRY_CEILING, max(RETRY_FLOOR, texts / rate))

    def describe(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "queued_texts": self._texts,
                "queued_bytes": self._bytes,
                "max_texts": self.limits.max_texts,
                "max_bytes": self.limits.max_bytes,
                "refused": self.refused,
            }


def separable(batches: list[tuple[int, int, float]]) -> bool:
    """Whether ``batches`` can tell per-text from per-byte cost (they are not all alike):
    a few like batches would put all the cost on bytes and price a long text at 100x."""
    snn = sum(n * n for n, _, _ in batches)
    scc = sum(c * c for _, c, _ in batches)
    snc = sum(n * c for n, c, _ in batches)
    return snn * scc - snc * snc > 1e-3 * snn * scc


# The cost model's terms, in the order it prefers them when the batches fit several alike
# (one kind of batch fits any single term: all of it goes on bytes, as a long text would).
TERMS = (("text", "byte"), ("byte",), ("text",), ("batch", "text", "byte"), ("batch", "byte"), ("batch", "text"), ("batch",))
TEXTS_PER_BATCH = 64  # the daemon's default max_batch_size: how many model calls a request is priced as


def fit_cost(batches: deque[tuple[int, int, float]] | list[tuple[int, int, float]] | tuple[()]) -> tuple[float, float, float]:
    """Least squares of ``seconds = c + a * texts + b * bytes`` with c, a, b >= 0: (seconds a
    batch, a text, a byte). Before, without ``c``, a model call's own cost went on its texts,
    and after a run of single-text batches on a busy machine a 512-text request was priced at
    100 s. Every subset of the terms is fitted; the feasible fit with the least residual
    wins, ties going to the earlier of :data:`TERMS`."""
    import numpy as np

    if not batches:
        return 0.0, 0.0, 0.0
    data = np.asarray(batches, dtype=np.float64)
    columns = {"batch": np.ones(len(data)), "text": data[:, 0], "byte": data[:, 1]}
    seconds = data[:, 2]
    scale = float(seconds @ seconds) or 1.0
    best: tuple[float, int, dict[str, float]] | None = None
    for rank, terms in enumerate(TERMS):
        matrix = np.stack([columns[term] for term in terms], axis=1)
        if np.linalg.matrix_rank(matrix) < len(terms):
            continue  # the batches cannot tell these terms apart
        solution, *_ = np.linalg.lstsq(matrix, seconds, rcond=None)
        if (solution < 0).any():
            continue
        residual = float(np.sum((matrix @ solution - seconds) ** 2)) / scale
        if best is None or residual < best[0] - 1e-9:
            best = (residual, rank, dict(zip(terms, (float(v) for v in solution), strict=True)))
    if best is None:
        return 0.0, 0.0, 0.0
    fitted = best[2]
    return fitted.get("batch", 0.0), fitted.get("text", 0.0), fitted.get("byte", 0.0)


def limits_from(max_texts: int, max_mb: float) -> QueueLimits:
    return QueueLimits(max_texts, int(max_mb * MB))
