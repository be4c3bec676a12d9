"""The encode op: validated, admitted and given its version on the socket thread; answered
by a callback from whichever thread finishes it.

A request that asks for ``count_tokens`` (the HTTP endpoint's ``usage``) has its texts
counted by the version's own tokenizer on the ``tokens`` pool first: tokenizing is CPU work
the socket thread must not do, and the inference thread is kept for the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hotswapd.pipeline.batching import BatchLimits
from hotswapd.pipeline.deadline import Deadline
from hotswapd.pipeline.encoding import Encoding, EncodeJob, Pipeline
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.core.op_types import Deferred, Outcome, Reply, option
from hotswapd.core.services import Services
from hotswapd.core.snapshot import Snapshot
from hotswapd.errors import (
    BatchTooLarge,
    Busy,
    Cancelled,
    DeadlineExceeded,
    EmptyRequest,
    HotswapError,
    InternalError,
    InvalidText,
    ProtocolError,
    RequestError,
    TextTooLong,
    UnknownVersion,
    WrongTask,
)
from hotswapd.config.schema import UNCALIBRATED_BACKENDS, DaemonConfig
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
    ranges: bool = False  # the reply carries the version's int8/uint8 calibration ranges


class EncodeOp:
    task = "embed"  # the versions this op serves (a rerank op serves task = "rerank")

    def __init__(self, services: Services) -> None:
        self._s = services
        self._registry = services.registry
        self._pipeline = Pipeline(
            services.inference,
            offload=lambda work: services.workers.submit("tokens", work),
            max_text_bytes=lambda: services.registry.config.daemon.max_text_bytes,
            limits=self._limits,
        )

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
        if spec.task != self.task:
            verb = "hs rerank (op rerank)" if spec.task == "rerank" else "hs encode (op encode)"
            raise WrongTask(f"{name}@{version} is {'a rerank' if spec.task == 'rerank' else 'an embed'} version: use {verb}")
        if option(request, "ranges", bool) and (spec.backend in UNCALIBRATED_BACKENDS or normalize is False or (normalize is None and not spec.normalize)):
            # Refused before the model runs: int8/uint8 needs the version's calibration.
            why = "its calibration is of normalized vectors" if spec.backend not in UNCALIBRATED_BACKENDS else f"{spec.backend} versions have no calibration"
            raise RequestError(f"{name}@{version} gives no int8/uint8 output here: {why} (float32, float16 and the binary types need none)")
        prompt = option(request, "prompt", str)
        if prompt is not None and not 0 < len(prompt) <= MAX_PROMPT_NAME:
            raise ProtocolError(f"option 'prompt' must be a prompt's name, 1 to {MAX_PROMPT_NAME} characters")
        flags = replace(self.flags(spec.normalize if normalize is None else normalize, use_cache, wants_tokens), prompt=prompt,
                        ranges=bool(option(request, "ranges", bool)))
        context = self.context(request)
        # An ensemble does its members' work: one request per member.
        members = spec.member_count
        ticket = self._s.admission.admit(
            len(texts) * members, sum(len(frame) for frame in request.payload) * members, deadline_ms / 1000 if deadline_ms else None, key=(name, version)
        )
        deadline = Deadline.within(deadline_ms / 1000 if deadline_ms is not None else None)
        span = spans.start(request.op, _traceparent(request), {"hotswap.model": name, "hotswap.version": version, "hotswap.texts": len(texts), "hotswap.prompt": prompt})
        # A version that a reload removes while this request waits for its load: routed again,
        # unless the request named it.
        reroute = None if pinned else (lambda: self._s.switchboard.pick(name, key))
        return Deferred(
            lambda reply: self._start(name, version, texts, flags, deadline, ticket.release, _traced(_generation(reply, snap.fleet_generation), span), context, snap, reroute),
            withdraw=deadline.withdraw,
        )

    def flags(self, normalize: bool, use_cache: bool, count_tokens: bool) -> EncodeFlags:
        return EncodeFlags(normalize, use_cache, count_tokens)

    def context(self, request: Request) -> Any:
        """What an op built on this one reads from its request (search: k), for :meth:`respond`."""
        return None

    def _start(
        self, name: str, version: str, texts: list[str], flags: EncodeFlags, deadline: Deadline, release_ticket: Callable[[], None], reply: Reply, context: Any,
        snap: Snapshot | None = None, reroute: Callable[[], str] | None = None,
    ) -> None:
        started = time.perf_counter()

        def run(loaded: LoadedVersion) -> None:
            def finished(answer: Encoding | HotswapError) -> None:
                outcome = "ok" if not isinstance(answer, HotswapError) else _outcome(answer)
                self.record(loaded.model, loaded.version, outcome, time.perf_counter() - started, len(texts))
                if isinstance(reply, _TracedReply):
                    reply.note(loaded, answer)
                self.respond(loaded, answer, flags, release_ticket, reply, context)

            # A request for int8/uint8 asks the version to measure its calibration (once), then
            # goes to the model while that is pending: its batch queues behind the measurement
            # on the inference thread (the cache would answer before it).
            calibration = loaded.attachments.get("calibration") if flags.ranges else None
            if calibration is not None:
                calibration.request()
            use_cache = flags.use_cache and not (calibration is not None and calibration.pending)
            job = EncodeJob(loaded, texts, flags.normalize, flags.prompt, flags.count_tokens, use_cache, deadline)
            self._pipeline.run(job, finished)

        # The copy of the snapshot this request was routed by; if a reload replaced it since,
        # the copy in force (loaded if need be).
        loaded = self._registry.try_lease(name, version, snap)
        if loaded is not None:
            run(loaded)
            return

        def load_then_run() -> None:
            stopped = deadline.stopped()
            if stopped is not None:  # passed, or withdrawn, while it waited for its model to load
                release_ticket()
                reply(stopped)
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

    def respond(self, loaded: LoadedVersion, answer: Encoding | HotswapError, flags: EncodeFlags, release_ticket: Callable[[], None], reply: Reply, context: Any) -> None:
        """Give the lease and the ticket back and answer, on the thread that finished the
        encode. An op that does more with the vectors (search) overrides this, keeping the
        lease until it is done: a version is closed only after its last request."""
        outcome: Outcome | HotswapError
        try:
            self._registry.release(loaded)
            outcome = answer if isinstance(answer, HotswapError) else self.outcome(answer, flags, context)
        except HotswapError as exc:  # the answer cannot be given (no calibration): typed, as it is
            outcome = exc
        except Exception as exc:  # noqa: BLE001 -- the request still gets its one reply
            outcome = InternalError(f"{type(exc).__name__}: {exc}")
        finally:
            release_ticket()
        reply(outcome)

    def outcome(self, encoding: Encoding, flags: EncodeFlags, context: Any) -> Outcome:
        """What the request is answered (an op built on this one shapes its own: rerank)."""
        return self.wire(encoding, flags)

    @staticmethod
    def wire(encoding: Encoding, flags: EncodeFlags) -> Outcome:
        """The answer as the router sends it: the facts in the header, the vectors as one frame."""
        header = {**encoding.facts(), "dtype": VECTOR_DTYPE}
        if flags.ranges:
            header.update(_calibration(encoding))
        if flags.count_tokens:
            header["tokens"] = encoding.tokens
            header["tokens_cut"] = encoding.tokens_cut
        return Outcome(header, [encoding.vectors])

    def _limits(self, loaded: LoadedVersion) -> BatchLimits:
        spec, defaults = loaded.config, self._registry.config.daemon
        return BatchLimits(
            max_batch_size=spec.max_batch_size or defaults.max_batch_size,
            max_batch_tokens=spec.max_batch_tokens or defaults.max_batch_tokens,
            max_wait_ms=defaults.max_wait_ms if spec.max_wait_ms is None else spec.max_wait_ms,
        )

    def record(self, model: str, version: str, outcome: str, seconds: float, texts: int) -> None:
        """``outcome``: ok, error, cancelled (its client withdrew it), busy or deadline (the
        queue shed it: too much work ahead). Only ok and error say anything of the version,
        so only they count in its health, which can roll it back."""
        if outcome in ("ok", "error"):
            self._s.health.record(model, version, outcome == "ok", seconds * 1000)
        self._s.metrics.record_request(model, version, outcome, seconds, texts)

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
            if not len(frame):
                # One rule on every door (this socket, HTTP, file jobs): an empty text has no
                # meaning to embed, and a vector for it would look like one.
                raise InvalidText(f"text {index} is empty; remove blank lines or give each a text", index)
            texts.append(wire_text(frame, index))
        return texts


def _outcome(error: HotswapError) -> str:
    if isinstance(error, Cancelled):
        return "cancelled"
    if isinstance(error, Busy):
        return "busy"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    return "error"


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

    def note(self, loaded: LoadedVersion, answer: Encoding | HotswapError) -> None:
        encoding = answer if isinstance(answer, Encoding) else None
        timing = encoding.timing if encoding is not None else None
        self._facts = {
            "hotswap.version": loaded.version,
            "hotswap.fingerprint": loaded.fingerprint,
            "hotswap.cached": encoding.cached if encoding is not None else None,
            "hotswap.tokens": encoding.tokens if encoding is not None else None,
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


def _generation(reply: Reply, generation: int | None) -> Reply:
    """In a fleet: the answer names the fleet generation of the snapshot that routed it."""
    if generation is None:
        return reply

    def stamped(outcome: Outcome | HotswapError) -> None:
        if isinstance(outcome, Outcome):
            outcome.result["generation"] = generation
        reply(outcome)

    return stamped


def _traced(reply: Reply, span: Any) -> Reply:
    return reply if span is None else _TracedReply(reply, span)


def _calibration(encoding: Encoding) -> dict[str, Any]:
    """The version's int8/uint8 calibration (hotswapd.calibration), for the client to cut
    these float rows into steps exactly as every other int8 row of this version."""
    loaded = encoding.loaded
    found = loaded.attachments.get("calibration")
    if found is not None and found.ranges is None and found.pending:
        raise Busy(f"{loaded.model}@{loaded.version} is measuring its int8/uint8 calibration (it has just loaded): retry in a moment", 0.2)
    if found is None or found.ranges is None:
        why = found.problem if found is not None else "a rerank or composite version"
        raise RequestError(f"{loaded.model}@{loaded.version} has no int8/uint8 calibration ({why})")
    if not encoding.normalized:
        raise RequestError("int8/uint8 output is calibrated on normalized vectors: ask for them without --no-normalize")
    return {"ranges": found.ranges.tolist(), "calibration": found.fingerprint}
