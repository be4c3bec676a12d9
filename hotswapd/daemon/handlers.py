"""What each op does. The router calls :meth:`Handlers.handle` on its own thread.

An op answers in one of three ways:

- at once, with an :class:`Outcome` (cheap reads of in-memory state: ping, status, models);
- with a :class:`Queued` job the router runs on a worker pool (anything that touches disk
  or may take long: switches, loads, history, reloads);
- with a :class:`Deferred` (encode): started on the socket thread without blocking, and
  answered by a callback from whichever thread finishes it, so no thread is parked per
  request.

All validation, admission and the choice of version happen before, on the socket thread,
so a bad or excess request is answered at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from hotswapd import __version__
from hotswapd.daemon.admission import Admission
from hotswapd.daemon.audit import SWITCH_EVENTS, AuditLog
from hotswapd.daemon.batching import BatchLimits
from hotswapd.daemon.describe import describe_loaded, describe_model
from hotswapd.daemon.health import HealthBook
from hotswapd.daemon.inference import Inference
from hotswapd.daemon.loaded import LoadedVersion
from hotswapd.daemon.metrics import Metrics
from hotswapd.daemon.registry import Registry
from hotswapd.daemon.switch_request import SwitchRequest
from hotswapd.daemon.switching import Switchboard
from hotswapd.daemon.workers import Pool, Workers
from hotswapd.errors import (
    BatchTooLarge,
    DeadlineExceeded,
    EmptyRequest,
    HotswapError,
    InternalError,
    InvalidText,
    ProtocolError,
    TextTooLong,
    UnknownVersion,
)
from hotswapd.protocol import VECTOR_DTYPE, Request


@dataclass
class Outcome:
    result: dict[str, Any]
    payload: list[Any] = field(default_factory=list)


Job = Callable[[], Outcome]
Reply = Callable[["Outcome | HotswapError"], None]


@dataclass
class Queued:
    """A job for a worker pool; its Outcome (or error) is the reply."""

    pool: Pool
    job: Job


@dataclass
class Deferred:
    """Work started on the socket thread that answers later: ``start(reply)`` must not
    block, and ``reply`` is called exactly once, from any thread."""

    start: Callable[[Reply], None]


@dataclass
class DaemonState:
    """What ``status`` reports about the daemon itself; the router and main keep it current."""

    endpoint: str
    config_path: str | None
    started_at: float = field(default_factory=time.time)
    phase: str = "starting"  # starting -> ready -> stopping
    in_flight: int = 0
    config_error: str | None = None
    stop_requested: bool = False


ALLOWED_OPTIONS: dict[str, set[str]] = {
    "encode": {"normalize", "key", "deadline_ms", "no_cache"},
    "switch": {"version", "strategy", "share", "sticky", "steps", "step_seconds", "step_requests", "force", "abort", "trigger"},
    "rollback": {"trigger"},
    "history": {"limit", "all", "skip"},
}


@dataclass
class Services:
    """What the handlers work with; built once by the daemon."""

    registry: Registry
    switchboard: Switchboard
    health: HealthBook
    metrics: Metrics
    audit: AuditLog
    reload: Callable[[str], dict[str, Any]]
    inference: Inference
    admission: Admission
    workers: Workers


def _option(request: Request, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = request.options.get(name)
    if value is None:  # absent, or an explicit null: the default
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; on the wire `true` is never a number.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"option {name!r} of op {request.op!r} must be {' or '.join(k.__name__ for k in kinds)}")
    return value


TRIGGERS = ("cli", "api")  # who asked, as the audit log records it; the client says which


def _trigger(request: Request) -> str:
    trigger = _option(request, "trigger", str, "api")
    if trigger not in TRIGGERS:
        raise ProtocolError(f"option 'trigger' must be one of {', '.join(TRIGGERS)}")
    return trigger  # type: ignore[no-any-return]


class Handlers:
    def __init__(self, services: Services, state: DaemonState) -> None:
        self._s = services
        self._registry = services.registry
        self._state = state
        self._process = psutil.Process()

    def handle(self, request: Request) -> Outcome | Queued | Deferred:
        unknown = set(request.options) - ALLOWED_OPTIONS.get(request.op, set())
        if unknown:
            raise ProtocolError(f"op {request.op!r} takes no option(s) {', '.join(sorted(unknown))}")
        return getattr(self, f"_op_{request.op}")(request)

    def _op_ping(self, request: Request) -> Outcome:
        return Outcome({"pong": True, "pid": os.getpid(), "phase": self._state.phase})

    def _op_models(self, request: Request) -> Outcome:
        return Outcome({"models": [describe_model(self._registry, self._s.switchboard, name) for name in sorted(self._registry.config.models)]})

    def _op_status(self, request: Request) -> Outcome:
        loaded = self._registry.loaded()
        rollouts = {}
        for name in self._s.switchboard.models():
            rollout = self._s.switchboard.describe(name)["rollout"]
            if rollout is not None:
                rollouts[name] = rollout
        return Outcome(
            {
                "version": __version__,
                "pid": os.getpid(),
                "phase": self._state.phase,
                "uptime_seconds": round(time.time() - self._state.started_at, 3),
                "socket": self._state.endpoint,
                "config_path": self._state.config_path,
                "config_error": self._state.config_error,
                "default_model": self._registry.config.default_model,
                "active": {name: self._s.switchboard.route(name).active for name in self._s.switchboard.models()},
                "rollouts": rollouts,
                "loaded": [f"{item.model}@{item.version}" for item in loaded],
                "in_flight": self._state.in_flight,
                "queue": self._s.admission.describe(),
                "draining": [f"{item.model}@{item.version}" for item in self._registry.draining()],
                "rss_bytes": self._process.memory_info().rss,
                "models_memory_bytes": sum(item.memory_bytes for item in loaded),
                "cache": self._s.inference.cache.describe(),
                "evicted": self._registry.evictions(),
            }
        )

    def _op_shutdown(self, request: Request) -> Outcome:
        self._state.stop_requested = True
        self._registry.stop_loading()
        return Outcome({"stopping": True, "pid": os.getpid()})

    def _op_evict(self, request: Request) -> Queued:
        name, _, _ = self._registry.resolve(request.model)
        return Queued("control", lambda: Outcome({"model": name, "evicted": self._registry.evict(name)}))

    def _op_preload(self, request: Request) -> Queued:
        name, _, pinned = self._registry.resolve(request.model)
        version = pinned or self._s.switchboard.route(name).active
        return Queued("control", lambda: Outcome(describe_loaded(self._registry.get(name, version))))

    def _op_encode(self, request: Request) -> Deferred:
        name, model, pinned = self._registry.resolve(request.model)
        texts = self._decode_texts(request.payload)
        normalize = _option(request, "normalize", bool)
        key = _option(request, "key", str)
        use_cache = not _option(request, "no_cache", bool)  # `hs compare` times the model, not the cache
        deadline_ms = _option(request, "deadline_ms", (int, float))
        if deadline_ms is not None and not 0 < deadline_ms <= 86_400_000:
            raise ProtocolError("option 'deadline_ms' must be a number of milliseconds in (0, 86400000]")
        # The version is fixed here, at dispatch: a switch after this point does not touch it.
        version = pinned or self._s.switchboard.pick(name, key)
        spec = model.versions.get(version)
        if spec is None:
            # A config reload is between updating the routes and the registry: ask again.
            name, model, pinned = self._registry.resolve(request.model)
            version = pinned or self._s.switchboard.pick(name, key)
            spec = model.versions.get(version)
            if spec is None:
                raise UnknownVersion(f"{name}@{version} is being removed by a config reload; retry")
        if normalize is None:
            normalize = spec.normalize
        ticket = self._s.admission.admit(len(texts), sum(len(frame) for frame in request.payload), deadline_ms / 1000 if deadline_ms else None)
        deadline = time.monotonic() + deadline_ms / 1000 if deadline_ms is not None else None
        return Deferred(lambda reply: self._start_encode(name, version, texts, (normalize, use_cache), deadline, ticket.release, reply))

    def _start_encode(self, name: str, version: str, texts: list[bytes], flags: tuple[bool, bool], deadline: float | None, release_ticket: Callable[[], None], reply: Reply) -> None:
        normalize, use_cache = flags
        started = time.perf_counter()

        answered = threading.Event()

        def answer(loaded: LoadedVersion, result: tuple[Any, int] | None, error: BaseException | None) -> None:
            if answered.is_set():
                return  # a failure after the answer was given must not return the lease twice
            answered.set()
            outcome: Outcome | HotswapError
            try:
                self._registry.release(loaded)
                outcome = self._encode_outcome(loaded, result, error, time.perf_counter() - started, len(texts))
            except Exception as exc:  # noqa: BLE001 -- the request still gets its one reply
                outcome = InternalError(f"{type(exc).__name__}: {exc}")
            finally:
                release_ticket()
            reply(outcome)

        def run(loaded: LoadedVersion) -> None:
            try:
                self._s.inference.submit(loaded, texts, normalize, self._limits(loaded), lambda result, error: answer(loaded, result, error), deadline, use_cache=use_cache)
            except Exception as exc:  # noqa: BLE001 -- the lease and the ticket must come back
                answer(loaded, None, exc)

        loaded = self._registry.try_lease(name, version)
        if loaded is not None:
            run(loaded)
            return

        def load_then_run() -> None:
            if deadline is not None and time.monotonic() >= deadline:
                release_ticket()
                reply(DeadlineExceeded("the request's deadline passed while it waited for its model to load"))
                return
            try:
                leased = self._registry.lease(name, version)
            except Exception as exc:  # noqa: BLE001 -- a failed load is this request's answer
                release_ticket()
                reply(exc if isinstance(exc, HotswapError) else InternalError(f"{type(exc).__name__}: {exc}"))
                return
            run(leased)

        self._s.workers.submit("loader", load_then_run)

    def _encode_outcome(self, loaded: LoadedVersion, result: tuple[Any, int] | None, error: BaseException | None, seconds: float, texts: int) -> Outcome | HotswapError:
        if error is not None or result is None:
            self._record(loaded.model, loaded.version, False, seconds, texts)
            if isinstance(error, HotswapError):
                return error
            return InternalError(f"{type(error).__name__}: {error}")
        self._record(loaded.model, loaded.version, True, seconds, texts)
        vectors, cached = result
        count, dim = vectors.shape
        return Outcome(
            {
                "model": loaded.model,
                "version": loaded.version,
                "fingerprint": loaded.fingerprint,
                "dim": dim,
                "count": count,
                "dtype": VECTOR_DTYPE,
                "cached": cached,
            },
            [vectors],
        )

    def _limits(self, loaded: LoadedVersion) -> BatchLimits:
        spec, defaults = loaded.config, self._registry.config.daemon
        return BatchLimits(
            max_batch_size=spec.max_batch_size or defaults.max_batch_size,
            max_batch_tokens=spec.max_batch_tokens or defaults.max_batch_tokens,
            max_wait_ms=defaults.max_wait_ms if spec.max_wait_ms is None else spec.max_wait_ms,
        )

    def _record(self, model: str, version: str, ok: bool, seconds: float, texts: int) -> None:
        self._s.health.record(model, version, ok, seconds * 1000)
        self._s.metrics.record_request(model, version, ok, seconds, texts)

    def _op_switch(self, request: Request) -> Queued:
        name, _, _ = self._registry.resolve(request.model)
        if _option(request, "abort", bool, False):
            # Not behind a switch that may be loading for a while on the control thread.
            return Queued("io", lambda: Outcome(self._s.switchboard.abort(name, reason="aborted by request", trigger=_trigger(request), client=request.peer)))
        version = _option(request, "version", str)
        if not version:
            raise ProtocolError("op 'switch' needs option 'version'")
        steps = _option(request, "steps", list)
        if steps is not None and not (steps and all(isinstance(step, (int, float)) and not isinstance(step, bool) and 0 < step <= 100 for step in steps)):
            raise ProtocolError("option 'steps' must be a non-empty list of percentages in (0, 100]")
        share = _option(request, "share", (int, float))
        if share is not None and not 0 < share <= 100:
            raise ProtocolError("option 'share' must be a percentage in (0, 100]")
        step_seconds = _option(request, "step_seconds", (int, float))
        if step_seconds is not None and not 0 < step_seconds <= 30 * 86400:
            raise ProtocolError("option 'step_seconds' must be in (0, 2592000]")
        step_requests = _option(request, "step_requests", int)
        if step_requests is not None and step_requests < 1:
            raise ProtocolError("option 'step_requests' must be at least 1")
        switch = SwitchRequest(
            model=name,
            target=version,
            strategy=_option(request, "strategy", str, "immediate"),
            share=share,
            sticky=_option(request, "sticky", bool),
            steps=steps,
            step_seconds=step_seconds,
            step_requests=step_requests,
            force=_option(request, "force", bool, False),
            client=request.peer,
            trigger=_trigger(request),
        )
        return Queued("control", lambda: Outcome(self._s.switchboard.switch(switch)))

    def _op_rollback(self, request: Request) -> Queued:
        name, _, _ = self._registry.resolve(request.model)
        return Queued("control", lambda: Outcome(self._s.switchboard.rollback(name, trigger=_trigger(request), client=request.peer)))

    def _op_history(self, request: Request) -> Queued:
        name = self._registry.resolve(request.model)[0] if request.model else None
        limit = _option(request, "limit", int, 50)
        skip = _option(request, "skip", int, 0)
        events = None if _option(request, "all", bool, False) else SWITCH_EVENTS | {"config_rejected"}

        def read() -> Outcome:
            self._s.switchboard.settle()
            entries = self._s.audit.read(name, limit=max(1, min(limit, 10_000)), events=events, skip=max(0, skip))
            return Outcome({"entries": entries, "skipped_lines": self._s.audit.last_skipped})

        return Queued("io", read)

    def _op_reload(self, request: Request) -> Queued:
        return Queued("control", lambda: Outcome(self._s.reload("command")))

    def _op_metrics(self, request: Request) -> Queued:
        return Queued("io", lambda: Outcome({"text": self._s.metrics.exposition()}))

    def _decode_texts(self, frames: list[bytes]) -> list[bytes]:
        limits = self._registry.config.daemon
        if not frames:
            raise EmptyRequest("encode needs at least one text")
        if len(frames) > limits.max_batch_texts:
            raise BatchTooLarge(
                f"{len(frames)} texts in one request; the limit is {limits.max_batch_texts} "
                "(daemon.max_batch_texts): send smaller chunks"
            )
        texts: list[bytes] = []
        for index, frame in enumerate(frames):
            if len(frame) > limits.max_text_bytes:
                raise TextTooLong(
                    f"text {index} is {len(frame)} bytes; the limit is {limits.max_text_bytes} (daemon.max_text_bytes)", index
                )
            try:
                bytes(frame).decode("utf-8")  # validated now, decoded again when its batch runs
                texts.append(frame if isinstance(frame, bytes) else bytes(frame))
            except UnicodeDecodeError as exc:
                raise InvalidText(f"text {index} is not valid UTF-8 (byte {exc.start})", index) from exc
        return texts
