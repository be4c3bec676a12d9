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
    deadline: float | None = None  # time.monotonic() past which queued work is dropped unrun


@dataclass(frozen=True)
class Encoding:
    """The pipeline's answer: one row per text, and what the caller may report of it."""

    loaded: LoadedVersion
    vectors: np.ndarray  # (texts, dim) little-endian float32
    normalized: bool
    cached: int = 0  # rows served by the cache
    truncated: int = 0  # texts over the version's maximum, cut (long_text = "truncate")
    chunked: int = 0  # texts over it, averaged over windows (long_text = "chunk-mean")
    tokens: int | None = None  # when counted
    timing: BatchTiming | None = None  # the batch that ran it, when one did
    seconds: float = 0.0

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
    return long_text.plan(job.loaded.caps, texts, maybe_long, job.loaded.config.long_text, job.count_tokens)


def finish(job: EncodeJob, vectors: np.ndarray, planned: Plan | None) -> np.ndarray:
    """One row per text: chunked texts' windows averaged (they ran unnormalised), then normalised."""
    if planned is not None and planned.reshaped:
        return long_text.combine(vectors, planned, job.normalize)
    return vectors


def _runs_normalized(job: EncodeJob, planned: Plan | None) -> bool:
    # Windows are averaged before normalising: they run unnormalised.
    return job.normalize and not (planned is not None and planned.reshaped)


class Pipeline:
    """The daemon's pipeline: CPU stages offloaded, the model run batched on the inference
    thread. :meth:`run` never blocks; ``done`` is called once, from the thread that finishes."""

    def __init__(self, inference: Inference, offload: Offload, max_text_bytes: Callable[[], int], limits: Callable[[LoadedVersion], BatchLimits]) -> None:
        self._inference = inference
        self._offload = offload
        self._max_text_bytes = max_text_bytes
        self._limits = limits  # a version's batch limits: its own, else the daemon's

    def run(self, job: EncodeJob, done: Callable[[Encoding | HotswapError], None]) -> None:
        composite = job.loaded.caps.composite
        if composite is not None:
            self._run_parts(job, composite, done)
            return
        started = time.perf_counter()
        answered = threading.Event()

        def answer(result: Encoding | BaseException) -> None:
            if answered.is_set():
                return  # a failure after the answer was given must not answer twice
            answered.set()
            if isinstance(result, BaseException) and not isinstance(result, HotswapError):
                result = InternalError(f"{type(result).__name__}: {result}")
            done(result)

        def guarded(stage: Callable[[], None]) -> Callable[[], None]:
            def run_stage() -> None:
                try:
                    stage()
                except Exception as exc:  # noqa: BLE001 -- a refused text, a tokenizer failure: this request's answer
                    answer(exc)

            return run_stage

        def submit(texts: list[str], planned: Plan | None) -> None:
            limits = self._limits(job.loaded)
            def ran(result: Rows | None, error: BaseException | None) -> None:
                if error is not None or result is None:
                    answer(error or InternalError("the batch returned nothing"))
                    return
                try:
                    vectors = finish(job, result.vectors, planned)
                except Exception as exc:  # noqa: BLE001
                    answer(exc)
                    return
                answer(
                    Encoding(
                        job.loaded, vectors, job.normalize, cached=result.cached,
                        truncated=planned.truncated if planned else 0, chunked=planned.chunked if planned else 0,
                        tokens=planned.tokens if planned else None, timing=result.timing, seconds=time.perf_counter() - started,
                    )
                )

            to_encode = planned.texts if planned is not None else texts
            self._inference.submit(job.loaded, to_encode, _runs_normalized(job, planned), limits, ran, job.deadline, use_cache=job.use_cache)

        def plan_then_submit(texts: list[str], maybe_long: list[int]) -> None:
            submit(texts, plan(job, texts, maybe_long))

        def after_prepare(texts: list[str]) -> None:
            # Tokenising is CPU work: on the tokens pool, and only when a text could be over
            # the version's maximum or the caller wants the count.
            maybe_long = suspects(job.loaded, texts)
            if job.count_tokens or maybe_long:
                self._offload(guarded(lambda: plan_then_submit(texts, maybe_long)))
            else:
                submit(texts, None)

        def start() -> None:
            if job.loaded.text.changes(job.prompt):  # preprocessing is CPU work too
                self._offload(guarded(lambda: after_prepare(prepare(job, self._max_text_bytes()))))
            else:
                after_prepare(job.texts)

        guarded(start)()

    def _run_parts(self, job: EncodeJob, composite: Composite, done: Callable[[Encoding | HotswapError], None]) -> None:
        """A version built from others (an ensemble): each part is a request of its own, with
        its own prompt, preprocessing, length policy, cache and batches (shared with that
        version's other traffic), and the rows are merged when the last part is done."""
        started = time.perf_counter()
        parts = list(composite.parts)
        answers: list[Encoding | HotswapError | None] = [None] * len(parts)
        left = [len(parts)]
        lock = threading.Lock()

        def part_done(index: int, answer: Encoding | HotswapError) -> None:
            with lock:
                answers[index] = answer
                left[0] -= 1
                if left[0]:
                    return
            failed = [(part, a) for part, a in zip(parts, answers, strict=True) if isinstance(a, HotswapError)]
            if failed:
                part, error = failed[0]
                done(_named(error, f"{job.loaded.model}@{job.loaded.version}: ensemble member {part.spec}"))
                return
            encodings: list[Encoding] = answers  # type: ignore[assignment]
            try:
                vectors = composite.merge([encoding.vectors for encoding in encodings], job.normalize)
                check_vectors(job.loaded, vectors)
            except HotswapError as exc:
                done(exc)
                return
            except Exception as exc:  # noqa: BLE001 -- the request still gets its one answer
                done(InternalError(f"{type(exc).__name__}: {exc}"))
                return
            first = encodings[0]
            done(
                Encoding(
                    job.loaded, vectors, job.normalize, cached=min(e.cached for e in encodings),
                    truncated=max(e.truncated for e in encodings), chunked=max(e.chunked for e in encodings),
                    tokens=first.tokens, timing=encodings[-1].timing, seconds=time.perf_counter() - started,
                )
            )

        for index, part in enumerate(parts):
            # Each member's vectors as it computes them alone: normalised, then weighted.
            sub = EncodeJob(
                part.loaded, job.texts, True, job.prompt, count_tokens=job.count_tokens and index == 0,
                use_cache=job.use_cache, deadline=job.deadline,
            )
            self.run(sub, lambda answer, index=index: part_done(index, answer))


def _named(error: HotswapError, who: str) -> HotswapError:
    """The same typed error (code, text index), its message saying which part failed."""
    named = copy.copy(error)
    named.message = f"{who}: {error.message}"
    named.args = (named.message, *error.args[1:])
    return named


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
        tokens=planned.tokens if planned else None, seconds=time.perf_counter() - started,
    )
