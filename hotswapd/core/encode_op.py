"""The encode op: validated, admitted and given its version on the socket thread; answered
by a callback from whichever thread finishes it.

A request that asks for ``count_tokens`` (the HTTP endpoint's ``usage``) has its texts
counted by the version's own tokenizer on the ``tokens`` pool first: tokenizing is CPU work
the socket thread must not do, and the inference thread is kept for the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hotswapd.pipeline import long_text
from hotswapd.pipeline.batching import BatchLimits, BatchTiming, last_batch
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.pipeline.long_text import Plan
from hotswapd.core.op_types import Deferred, Outcome, Reply, option
from hotswapd.core.services import Services
from hotswapd.core.snapshot import Snapshot
from hotswapd.config.ensemble import ENSEMBLE
from hotswapd.errors import (
    BatchTooLarge,
    DeadlineExceeded,
    EmptyRequest,
    HotswapError,
    InternalError,
    ProtocolError,
    TextTooLong,
    UnknownVersion,
)
from hotswapd.config.schema import DaemonConfig
from hotswapd.wire.protocol import VECTOR_DTYPE, Request
from hotswapd.text.decode import wire_text
from hotswapd.text.prompts import MAX_PROMPT_NAME
from hotswapd.tracing import spans


@dataclass(frozen=True)
class EncodeFlags:
    normalize: bool
    use_cache: bool  # False: `hs compare` times the model, not the cache
    count_tokens: bool  # the reply says how many tokens the texts are (OpenAI's usage)
    prompt: str | None = None  # one of the version's prompts by name (hotswapd.text)


class EncodeOp:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._registry = services.registry

    def prepare(self, request: Request) -> Deferred:
        # One snapshot for the whole choice: model, version, its options and the loaded copy.
        snap = self._registry.published.current
        name, model, pinned = self._registry.resolve(request.model, snap)
        texts = self.decode_texts(request.payload, snap.config.daemon)
        normalize = option(request, "normalize", bool)
        key = option(request, "key", str)
        use_cache = not option(request, "no_cache", bool)
        wants_tokens = bool(option(request, "count_tokens", bool))
        deadline_ms = option(request, "deadline_ms", (int, float))
        if deadline_ms is not None and not 0 < deadline_ms <= 86_400_000:
            raise ProtocolError("option 'deadline_ms' must be a number of milliseconds in (0, 86400000]")
        # The version is fixed here, at dispatch: a switch after this point does not touch it.
        version = pinned or self._s.switchboard.pick(name, key, snap)
        spec = model.versions[version]  # the routes and the config of one snapshot agree
        prompt = option(request, "prompt", str)
        if prompt is not None and not 0 < len(prompt) <= MAX_PROMPT_NAME:
            raise ProtocolError(f"option 'prompt' must be a prompt's name, 1 to {MAX_PROMPT_NAME} characters")
        flags = replace(self.flags(spec.normalize if normalize is None else normalize, use_cache, wants_tokens), prompt=prompt)
        context = self.context(request)
        # An ensemble does its members' work, and holds a copy of the text for each.
        members = len(spec.options.members) if spec.backend == ENSEMBLE else 1  # type: ignore[attr-defined]
        ticket = self._s.admission.admit(len(texts) * members, sum(len(frame) for frame in request.payload) * members, deadline_ms / 1000 if deadline_ms else None)
        deadline = time.monotonic() + deadline_ms / 1000 if deadline_ms is not None else None
        span = spans.start(request.op, _traceparent(request), {"hotswap.model": name, "hotswap.version": version, "hotswap.texts": len(texts), "hotswap.prompt": prompt})
        # A version that a reload removes while this request waits for its load: routed again,
        # unless the request named it.
        reroute = None if pinned else (lambda: self._s.switchboard.pick(name, key))
        return Deferred(lambda reply: self._start(name, version, texts, flags, deadline, ticket.release, _traced(reply, span), context, snap, reroute))

    def flags(self, normalize: bool, use_cache: bool, count_tokens: bool) -> EncodeFlags:
        return EncodeFlags(normalize, use_cache, count_tokens)

    def context(self, request: Request) -> Any:
        """What an op built on this one reads from its request (search: k), for :meth:`respond`."""
        return None

    def _start(
        self, name: str, version: str, texts: list[str], flags: EncodeFlags, deadline: float | None, release_ticket: Callable[[], None], reply: Reply, context: Any,
        snap: Snapshot | None = None, reroute: Callable[[], str] | None = None,
    ) -> None:
        started = time.perf_counter()
        answered = threading.Event()

        def answer(loaded: LoadedVersion, result: tuple[Any, int] | None, error: BaseException | None, planned: Plan | None = None) -> None:
            if answered.is_set():
                return  # a failure after the answer was given must not return the lease twice
            answered.set()
            if isinstance(reply, _TracedReply):
                reply.note(loaded, result, planned, last_batch())
            self.respond(loaded, lambda: self._outcome(loaded, result, error, time.perf_counter() - started, len(texts), flags, planned), release_ticket, reply, context)

        def submit(loaded: LoadedVersion, prepared: list[str], planned: Plan | None) -> None:
            reshaped = planned is not None and planned.reshaped

            def done(result: tuple[Any, int] | None, error: BaseException | None) -> None:
                if reshaped and result is not None and error is None:
                    # Chunked texts came back as windows, unnormalised: one row per text again.
                    result = (long_text.combine(result[0], planned, flags.normalize), 0)  # type: ignore[arg-type]
                answer(loaded, result, error, planned)

            try:
                to_encode = planned.texts if planned is not None else prepared
                normalize = flags.normalize and not reshaped
                self._s.inference.submit(loaded, to_encode, normalize, self._limits(loaded), done, deadline, use_cache=flags.use_cache)
            except Exception as exc:  # noqa: BLE001 -- the lease and the ticket must come back
                answer(loaded, None, exc)

        def plan_then_submit(loaded: LoadedVersion, prepared: list[str], suspects: list[int]) -> None:
            try:
                planned = long_text.plan(loaded.embedder, prepared, suspects, loaded.config.long_text, flags.count_tokens)
            except Exception as exc:  # noqa: BLE001 -- a refused text or a tokenizer failure is this request's answer
                answer(loaded, None, exc)
                return
            submit(loaded, prepared, planned)

        def run_prepared(loaded: LoadedVersion, prepared: list[str]) -> None:
            # Tokenising is CPU work: done on the tokens pool, and only when a text could be
            # over the version's maximum or the caller wants the count.
            suspects = long_text.might_be_long(prepared, getattr(loaded.embedder, "max_tokens", None))
            if flags.count_tokens or suspects:
                self._s.workers.submit("tokens", lambda: plan_then_submit(loaded, prepared, suspects))
            else:
                submit(loaded, prepared, None)

        def prepare_then_run(loaded: LoadedVersion) -> None:
            try:
                prepared = loaded.text.prepare(texts, flags.prompt, self._registry.config.daemon.max_text_bytes)
            except Exception as exc:  # noqa: BLE001 -- an unknown prompt is this request's answer
                answer(loaded, None, exc)
                return
            run_prepared(loaded, prepared)

        def run(loaded: LoadedVersion) -> None:
            try:
                changes = loaded.text.changes(flags.prompt)
            except HotswapError as exc:  # a prompt this version does not have
                answer(loaded, None, exc)
                return
            if changes:  # preprocessing is CPU work too: the tokens pool, not the socket thread
                self._s.workers.submit("tokens", lambda: prepare_then_run(loaded))
            else:
                run_prepared(loaded, texts)

        # The copy of the snapshot this request was routed by; if a reload replaced it since,
        # the copy in force (loaded if need be).
        loaded = self._registry.try_lease(name, version, snap)
        if loaded is not None:
            run(loaded)
            return

        def load_then_run() -> None:
            if deadline is not None and time.monotonic() >= deadline:
                release_ticket()
                reply(DeadlineExceeded("the request's deadline passed while it waited for its model to load"))
                return
            try:
                try:
                    leased = self._registry.lease(name, version)
                except UnknownVersion:
                    if reroute is None:
                        raise
                    leased = self._registry.lease(name, reroute())
            except Exception as exc:  # noqa: BLE001 -- a failed load is this request's answer
                release_ticket()
                reply(exc if isinstance(exc, HotswapError) else InternalError(f"{type(exc).__name__}: {exc}"))
                return
            run(leased)

        self._s.workers.submit("loader", load_then_run)

    def respond(self, loaded: LoadedVersion, outcome: Callable[[], Outcome | HotswapError], release_ticket: Callable[[], None], reply: Reply, context: Any) -> None:
        """Give the lease and the ticket back and answer, on the thread that finished the
        encode. An op that does more with the vectors (search) overrides this, keeping the
        lease until it is done: a version is closed only after its last request."""
        answer: Outcome | HotswapError
        try:
            self._registry.release(loaded)
            answer = outcome()
        except Exception as exc:  # noqa: BLE001 -- the request still gets its one reply
            answer = InternalError(f"{type(exc).__name__}: {exc}")
        finally:
            release_ticket()
        reply(answer)

    def _outcome(
        self, loaded: LoadedVersion, result: tuple[Any, int] | None, error: BaseException | None, seconds: float, texts: int, flags: EncodeFlags, planned: Plan | None
    ) -> Outcome | HotswapError:
        if error is not None or result is None:
            self.record(loaded.model, loaded.version, False, seconds, texts)
            if isinstance(error, HotswapError):
                return error
            return InternalError(f"{type(error).__name__}: {error}")
        self.record(loaded.model, loaded.version, True, seconds, texts)
        vectors, cached = result
        count, dim = vectors.shape
        header = {
            "model": loaded.model,
            "version": loaded.version,
            "fingerprint": loaded.fingerprint,
            "dim": dim,
            "count": count,
            "dtype": VECTOR_DTYPE,
            "cached": cached,
            "normalized": flags.normalize,
            # Texts over the version's maximum tokens, cut or averaged over windows (long_text).
            "truncated": planned.truncated if planned is not None else 0,
            "chunked": planned.chunked if planned is not None else 0,
        }
        if flags.count_tokens:
            header["tokens"] = planned.tokens if planned is not None else None
        members = getattr(loaded.embedder, "member_facts", None)
        if callable(members):  # an ensemble names every member's version and fingerprint
            header["members"] = members()
        return Outcome(header, [vectors])

    def _limits(self, loaded: LoadedVersion) -> BatchLimits:
        spec, defaults = loaded.config, self._registry.config.daemon
        return BatchLimits(
            max_batch_size=spec.max_batch_size or defaults.max_batch_size,
            max_batch_tokens=spec.max_batch_tokens or defaults.max_batch_tokens,
            max_wait_ms=defaults.max_wait_ms if spec.max_wait_ms is None else spec.max_wait_ms,
        )

    def record(self, model: str, version: str, ok: bool, seconds: float, texts: int) -> None:
        self._s.health.record(model, version, ok, seconds * 1000)
        self._s.metrics.record_request(model, version, ok, seconds, texts)

    def decode_texts(self, frames: list[bytes], limits: DaemonConfig | None = None) -> list[str]:
        """The request's texts, checked against the limits and decoded (the only decode)."""
        limits = limits or self._registry.config.daemon
        if not frames:
            raise EmptyRequest("encode needs at least one text")
        if len(frames) > limits.max_batch_texts:
            raise BatchTooLarge(
                f"{len(frames)} texts in one request; the limit is {limits.max_batch_texts} "
                "(daemon.max_batch_texts): send smaller chunks"
            )
        texts: list[str] = []
        for index, frame in enumerate(frames):
            if len(frame) > limits.max_text_bytes:
                raise TextTooLong(
                    f"text {index} is {len(frame)} bytes; the limit is {limits.max_text_bytes} (daemon.max_text_bytes)", index
                )
            texts.append(wire_text(frame, index))
        return texts


def _traceparent(request: Request) -> str | None:
    """The caller's W3C trace context, if well-formed (a malformed one is ignored, as the
    W3C spec says: the request is served, starting a trace of its own)."""
    value = request.options.get("traceparent")
    return value if isinstance(value, str) and spans.TRACEPARENT.match(value) else None


class _TracedReply:
    """A request's reply that also finishes its span, with what the answer tells."""

    def __init__(self, reply: Reply, span: Any) -> None:
        self._reply = reply
        self._span = span
        self._facts: dict[str, Any] = {}

    def note(self, loaded: LoadedVersion, result: tuple[Any, int] | None, planned: Plan | None, timing: BatchTiming | None) -> None:
        self._facts = {
            "hotswap.version": loaded.version,
            "hotswap.fingerprint": loaded.fingerprint,
            "hotswap.cached": result[1] if result is not None else None,
            "hotswap.tokens": planned.tokens if planned is not None else None,
        }
        if timing is not None:
            self._facts.update({
                "hotswap.queue_ms": timing.queue_ms,
                "hotswap.inference_ms": timing.inference_ms,
                "hotswap.batch_texts": timing.batch_texts,
                "hotswap.batch_requests": timing.batch_requests,
            })

    def __call__(self, outcome: Outcome | HotswapError) -> None:
        try:
            spans.finish(self._span, self._facts, outcome if isinstance(outcome, BaseException) else None)
        finally:
            self._reply(outcome)


def _traced(reply: Reply, span: Any) -> Reply:
    return reply if span is None else _TracedReply(reply, span)
