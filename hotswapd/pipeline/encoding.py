"""The one text-to-vector pipeline: prepare -> run -> finish, with a typed answer.

    prepare  the version's prompt and preprocessing (texts are str: decoded once, at the
             edge), then the length plan: which texts may be over the version's maximum
             tokens, counted by its own tokenizer only when one could be (or the caller
             wants the count), then cut, refused or split into windows (``long_text``)
    run      the cache, then the batcher on the inference thread (:class:`Inference`), or,
             outside the daemon, the backend directly in this thread
    finish   windows averaged back into one row per text, rows checked and normalised

Every caller goes through here: the encode and search ops (asynchronously, CPU stages on
the daemon's ``tokens`` pool), and the workers that run a version outside the daemon
(file jobs on Ray, :mod:`hotswapd.pipeline.standalone`). The answer is an
:class:`Encoding`, not a wire message: the wire format exists only at the edges (the
router, the HTTP endpoint).
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotswapd.errors import HotswapError, InternalError
from hotswapd.pipeline import long_text
from hotswapd.pipeline.batching import BatchLimits, BatchTiming
from hotswapd.pipeline.inference import check_vectors, run_backend
from hotswapd.pipeline.long_text import Plan

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import Composite
    from hotswapd.pipeline.deadline import Deadline
    from hotswapd.pipeline.inference import Inference, Rows
    from hotswapd.pipeline.loaded import LoadedVersion

Offload = Callable[[Callable[[], None]], None]  # runs CPU work off the caller's thread (the tokens pool)


@dataclass(frozen=True)
class EncodeJob:
    """What to encode and how: one request's texts for one leased version."""

    loaded: LoadedVersion
    texts: list[str]
    normalize: bool
    prompt: str | None = None  # one of the version's prompts by name
    count_tokens: bool = False  # the answer says how many tokens the texts are (OpenAI's usage)
    use_cache: bool = True  # False: `hs compare` times the model, not the cache
    deadline: Deadline | None = None  # past it, or withdrawn by its client, queued work is dropped unrun
    long_text: str | None = None  # the version's own policy unless given (the daemon's probes: "truncate")


@dataclass(frozen=True)
class Encoding:
    """The pipeline's answer: one row per text, and what the caller may report of it."""

    loaded: LoadedVersion
    vectors: np.ndarray  # (texts, dim) little-endian float32
    normalized: bool
    cached: int = 0  # rows served by the cache
    truncated: int = 0  # texts over the version's maximum, cut (long_text = "truncate")
    chunked: int = 0  # texts over it, averaged over windows (long_text = "chunk-mean")
    tokens: int | None = None  # when counted: what the model read (a truncated text up to its cut)
    tokens_cut: int = 0  # when counted: the tokens truncation dropped
    timing: BatchTiming | None = None  # the batch that ran it, when one did
    seconds: float = 0.0
    computed: frozenset[int] = frozenset()  # the texts a model computed (the others: the cache)

    def facts(self) -> dict[str, Any]:
        """What a reply tells of the answer besides the vectors (the wire header's fields)."""
        count, dim = self.vectors.shape
        loaded = self.loaded
        facts: dict[str, Any] = {
            "model": loaded.model,
            "version": loaded.version,
            "fingerprint": loaded.fingerprint,
            "dim": dim,
            "count": count,
            "cached": self.cached,
            "normalized": self.normalized,
            "truncated": self.truncated,
            "chunked": self.chunked,
        }
        members = loaded.caps.member_facts
        if members is not None:  # an ensemble names every member's version and fingerprint
            facts["members"] = members()
        return facts


def prepare(job: EncodeJob, max_text_bytes: int | None) -> list[str]:
    """The version's prompt and preprocessing applied (CPU work when it changes anything)."""
    return job.loaded.text.prepare(job.texts, job.prompt, max_text_bytes)


def suspects(loaded: LoadedVersion, texts: Sequence[str]) -> list[int]:
    """Texts that may be over the version's maximum tokens (a byte bound: no tokenizing)."""
    return long_text.might_be_long(texts, loaded.caps.max_tokens)


def plan(job: EncodeJob, texts: list[str], maybe_long: list[int]) -> Plan:
    """The length plan, with one tokenization of the texts that need counting."""
    stopped = job.deadline.stopped if job.deadline is not None else None
    return long_text.plan(job.loaded.caps, texts, maybe_long, job.long_text or job.loaded.config.long_text, job.count_tokens, stopped)


def finish(job: EncodeJob, vectors: np.ndarray, planned: Plan | None) -> np.ndarray:
    """One row per text: chunked texts' windows averaged (they ran unnormalised), then normalised."""
    if planned is not None and planned.reshaped:
        return long_text.combine(vectors, planned, job.normalize)
    return vectors


def _runs_normalized(job: EncodeJob, planned: Plan | None) -> bool:
    # Windows are averaged before normalising: they run unnormalised.
    return job.normalize and not (planned is not None and planned.reshaped)


class _Once:
    """A request's one answer: later ones (a failure after the answer) are dropped, and an
    unexpected exception becomes an InternalError."""

    def __init__(self, done: Callable[[Encoding | HotswapError], None]) -> None:
        self._done = done
        self._lock = threading.Lock()
        self._answered = False

    def __call__(self, result: Encoding | BaseException) -> None:
        with self._lock:
            if self._answered:
                return
            self._answered = True
        if isinstance(result, BaseException) and not isinstance(result, HotswapError):
            result = InternalError(f"{type(result).__name__}: {result}")
        self._done(result)

    def guarded(self, stage: Callable[[], None]) -> Callable[[], None]:
        """``stage`` with any exception it raises as this request's answer (a refused text,
        a tokenizer failure): the lease and the ticket always come back through ``done``."""

        def run_stage() -> None:
            try:
                stage()
            except Exception as exc:  # noqa: BLE001 -- whatever failed, the request gets its one answer
                self(exc)

        return run_stage


class Pipeline:
    """The daemon's pipeline: CPU stages offloaded, the model run batched on the inference
    thread. :meth:`run` never blocks; ``done`` is called once, from the thread that finishes."""

    def __init__(self, inference: Inference, offload: Offload, max_text_bytes: Callable[[], int], limits: Callable[[LoadedVersion], BatchLimits]) -> None:
        self._inference = inference
        self._offload = offload
        self._max_text_bytes = max_text_bytes
        self._limits = limits  # a version's batch limits: its own, else the daemon's

    def run(self, job: EncodeJob, done: Callable[[Encoding | HotswapError], None]) -> None:
        answer = _Once(done)
        answer.guarded(lambda: self._start(job, answer))()

    def _start(self, job: EncodeJob, answer: _Once) -> None:
        composite = job.loaded.caps.composite
        if composite is not None:
            # Every member prepares and plans first (CPU: the tokens pool): a text or a prompt
            # one member refuses refuses the request before any model runs.
            self._later(job, answer, lambda: self._run_parts(job, composite, answer))
            return

        def after_prepare(texts: list[str]) -> None:
            # Tokenising is CPU work: on the tokens pool, and only when a text could be over
            # the version's maximum or the caller wants the count.
            maybe_long = suspects(job.loaded, texts)
            if job.count_tokens or maybe_long:
                self._later(job, answer, lambda: self._submit(job, texts, plan(job, texts, maybe_long), answer))
            else:
                self._submit(job, texts, None, answer)

        if job.loaded.text.changes(job.prompt):  # preprocessing is CPU work too
            self._later(job, answer, lambda: after_prepare(prepare(job, self._max_text_bytes())))
        else:
            after_prepare(job.texts)

    def _later(self, job: EncodeJob, answer: _Once, stage: Callable[[], None]) -> None:
        """``stage`` on the tokens pool, unless the request's deadline passed or its client
        withdrew it while it waited there (tokenising a withdrawn 15 MB request is waste)."""

        def unless_stopped() -> None:
            stopped = job.deadline.stopped() if job.deadline is not None else None
            if stopped is not None:
                answer(stopped)
                return
            stage()

        self._offload(answer.guarded(unless_stopped))

    def _submit(self, job: EncodeJob, texts: list[str], planned: Plan | None, answer: Callable[[Encoding | BaseException], None]) -> None:
        """Run: the cache, then the batcher; finish on the thread that answers the batch."""
        started = time.perf_counter()

        def ran(result: Rows | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                answer(error or InternalError("the batch returned nothing"))
                return
            try:
                vectors = finish(job, result.vectors, planned)
                computed = _original_rows(result.computed, planned)
            except Exception as exc:  # noqa: BLE001 -- this request's answer
                answer(exc)
                return
            answer(
                Encoding(
                    job.loaded, vectors, job.normalize, cached=len(job.texts) - len(computed),
                    truncated=planned.truncated if planned else 0, chunked=planned.chunked if planned else 0,
                    tokens=planned.tokens if planned else None, tokens_cut=planned.tokens_cut if planned else 0, timing=result.timing,
                    seconds=time.perf_counter() - started, computed=computed,
                )
            )

        to_encode = planned.texts if planned is not None else texts
        self._inference.submit(job.loaded, to_encode, _runs_normalized(job, planned), self._limits(job.loaded), ran, job.deadline, use_cache=job.use_cache)

    def _run_parts(self, job: EncodeJob, composite: Composite, answer: _Once) -> None:
        """A version built from others (an ensemble): each part is a request of its own, with
        its own prompt, preprocessing, length policy, cache and batches (shared with that
        version's other traffic), and the rows are merged when the last part is done."""
        started = time.perf_counter()
        who = f"{job.loaded.model}@{job.loaded.version}"
        parts = list(composite.parts)
        if not parts:
            raise InternalError(f"{who} has no parts to combine")
        ready: list[tuple[Any, EncodeJob, list[str], Plan | None]] = []
        for index, part in enumerate(parts):
            # Each member's vectors as it computes them alone: normalised, then weighted.
            sub = EncodeJob(
                part.loaded, job.texts, True, job.prompt, count_tokens=job.count_tokens and index == 0,
                use_cache=job.use_cache, deadline=job.deadline,
            )
            try:
                texts = prepare(sub, self._max_text_bytes()) if sub.loaded.text.changes(sub.prompt) else sub.texts
                maybe_long = suspects(sub.loaded, texts)
                planned = plan(sub, texts, maybe_long) if (sub.count_tokens or maybe_long) else None
            except HotswapError as exc:
                answer(_named(exc, f"{who}: ensemble member {part.spec}"))
                return
            ready.append((part, sub, texts, planned))

        answers: list[Encoding | BaseException | None] = [None] * len(ready)
        left = [len(ready)]
        lock = threading.Lock()

        def part_done(index: int, result: Encoding | BaseException) -> None:
            with lock:
                answers[index] = result
                left[0] -= 1
                if left[0]:
                    return
            failed = [(part, a) for (part, *_), a in zip(ready, answers, strict=True) if isinstance(a, BaseException)]
            if failed:
                part, error = failed[0]
                named = error if isinstance(error, HotswapError) else InternalError(f"{type(error).__name__}: {error}")
                answer(_named(named, f"{who}: ensemble member {part.spec}"))
                return
            encodings: list[Encoding] = answers  # type: ignore[assignment]
            try:
                vectors = composite.merge([encoding.vectors for encoding in encodings], job.normalize)
                check_vectors(job.loaded, vectors)
            except Exception as exc:  # noqa: BLE001 -- the request still gets its one answer
                answer(exc)
                return
            computed = frozenset().union(*(encoding.computed for encoding in encodings))
            answer(
                Encoding(
                    job.loaded, vectors, job.normalize, cached=len(job.texts) - len(computed),
                    truncated=max(e.truncated for e in encodings), chunked=max(e.chunked for e in encodings),
                    tokens=encodings[0].tokens, tokens_cut=encodings[0].tokens_cut, timing=next((e.timing for e in reversed(encodings) if e.timing is not None), None), seconds=time.perf_counter() - started, computed=computed,
                )
            )

        for index, (part, sub, texts, planned) in enumerate(ready):
            done = functools.partial(part_done, index)
            try:
                self._submit(sub, texts, planned, done)
            except Exception as exc:  # noqa: BLE001 -- counted as that member's answer; the others still come back
                done(exc)


def _named(error: HotswapError, who: str) -> HotswapError:
    """The same typed error (code, text index), its message saying which part failed."""
    named = copy.copy(error)
    named.message = f"{who}: {error.message}"
    named.args = (named.message, *error.args[1:])
    return named


def _original_rows(computed: Sequence[int], planned: Plan | None) -> frozenset[int]:
    """The request's texts (not windows) that a model computed rather than the cache."""
    if planned is None or not planned.reshaped:
        return frozenset(computed)
    owner = {row: text for text, group in enumerate(planned.groups) for row, _ in group}
    return frozenset(owner[row] for row in computed)


def encode_here(job: EncodeJob, max_text_bytes: int | None = None) -> Encoding:
    """The same stages in this thread, the backend called directly: for a version loaded
    outside the daemon (a Ray worker), where there is no batcher and no cache."""
    started = time.perf_counter()
    texts = prepare(job, max_text_bytes)
    maybe_long = suspects(job.loaded, texts)
    planned = plan(job, texts, maybe_long) if (maybe_long or job.count_tokens) else None
    to_encode = planned.texts if planned is not None else texts
    vectors = run_backend(job.loaded, to_encode, _runs_normalized(job, planned))
    vectors = finish(job, vectors, planned)
    check_vectors(job.loaded, vectors)
    return Encoding(
        job.loaded, vectors, job.normalize,
        truncated=planned.truncated if planned else 0, chunked=planned.chunked if planned else 0,
        tokens=planned.tokens if planned else None, tokens_cut=planned.tokens_cut if planned else 0,
        seconds=time.perf_counter() - started, computed=frozenset(range(len(job.texts))),
    )
