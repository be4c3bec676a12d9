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
import time
from dataclasses import dataclass, field

import psutil

from hotswapd import __version__
from hotswapd.core.audit import SWITCH_EVENTS
from hotswapd.core.describe import describe_loaded, describe_model
from hotswapd.core.switch_request import SwitchRequest
from hotswapd.errors import ProtocolError, UnknownOp
from hotswapd.core.encode_op import EncodeOp
from hotswapd.core.seams import Handler, Seams
from hotswapd.core.services import Services
from hotswapd.core.op_types import Deferred, Outcome, Queued, option as _option
from hotswapd.wire.protocol import Request


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
    http_url: str | None = None  # the OpenAI-compatible endpoint, when it is on
    restart_needed: list[str] = field(default_factory=list)  # settings changed that only a restart applies


# The core's own ops take these options (an op a feature registers names its own: seams.OpSpec).
CORE_OPTIONS: dict[str, frozenset[str]] = {
    "encode": frozenset({"normalize", "key", "deadline_ms", "no_cache", "count_tokens", "prompt", "traceparent", "ranges"}),
    "switch": frozenset({"version", "strategy", "share", "sticky", "steps", "step_seconds", "step_requests", "force", "abort", "trigger"}),
    "rollback": frozenset({"trigger"}),
    "history": frozenset({"limit", "all", "skip"}),
}
CORE_OPS = ("ping", "models", "status", "shutdown", "evict", "preload", "encode", "switch", "rollback", "history", "reload", "metrics")

TRIGGERS = ("cli", "api")  # who asked, as the audit log records it; the client says which


def _trigger(request: Request) -> str:
    trigger = _option(request, "trigger", str, "api")
    if trigger not in TRIGGERS:
        raise ProtocolError(f"option 'trigger' must be one of {', '.join(TRIGGERS)}")
    return trigger  # type: ignore[no-any-return]


class Handlers:
    """The op table: the core's ops and those features registered (seams.OpSpec), each with
    the options it accepts. An op not in the table is refused as a protocol error."""

    def __init__(self, services: Services, state: DaemonState, seams: Seams | None = None) -> None:
        self._s = services
        self._registry = services.registry
        self._state = state
        self._seams = seams or services.registry.seams
        self._process = psutil.Process()
        self._encode = EncodeOp(services)
        self._table: dict[str, tuple[frozenset[str], Handler]] = {
            name: (CORE_OPTIONS.get(name, frozenset()), getattr(self, f"_op_{name}")) for name in CORE_OPS
        }
        for spec in self._seams.ops.values():
            if spec.name in self._table:
                raise ValueError(f"op {spec.name!r} is the core's own")
            self._table[spec.name] = (spec.options, spec.build(services))

    def ops(self) -> list[str]:
        return sorted(self._table)

    def handler(self, op: str) -> Handler:
        """The handler the table holds for ``op`` (tests reach a feature's state through it)."""
        return self._table[op][1]

    def handle(self, request: Request) -> Outcome | Queued | Deferred:
        entry = self._table.get(request.op)
        if entry is None:
            raise UnknownOp(f"unknown op {request.op!r}; known ops: {', '.join(sorted(self._table))}")
        options, handler = entry
        unknown = set(request.options) - options
        if unknown:
            raise ProtocolError(f"op {request.op!r} takes no option(s) {', '.join(sorted(unknown))}")
        return handler(request)

    def _op_ping(self, request: Request) -> Outcome:
        return Outcome({"pong": True, "pid": os.getpid(), "phase": self._state.phase})

    def _op_models(self, request: Request) -> Outcome:
        snap = self._registry.published.current  # config, routes and loaded versions of one moment
        rows = (describe_model(self._registry, self._s.switchboard, name, snap) for name in sorted(snap.config.models))
        return Outcome({"models": [row for row in rows if row is not None]})

    def _op_status(self, request: Request) -> Outcome:
        snap = self._registry.published.current
        loaded = list(snap.loaded.values())
        rollouts = {}
        for name in self._s.switchboard.models(snap):
            routing = self._s.switchboard.describe(name, snap)
            rollout = routing["rollout"] if routing is not None else None
            if rollout is not None:
                rollouts[name] = rollout
        return Outcome(
            {
                "version": __version__,
                "pid": os.getpid(),
                "phase": self._state.phase,
                "uptime_seconds": round(time.time() - self._state.started_at, 3),
                "socket": self._state.endpoint,
                "http": self._state.http_url,
                "config_path": self._state.config_path,
                "config_error": self._state.config_error,
                "restart_needed": self._state.restart_needed,
                "default_model": snap.config.default_model,
                "active": {name: route.active for name, route in sorted(snap.routes.items())},
                "generation": snap.generation,
                "rollouts": rollouts,
                "loaded": [f"{item.model}@{item.version}" for item in loaded],
                "in_flight": self._state.in_flight,
                "queue": self._s.admission.describe(),
                "draining": [f"{item.model}@{item.version}" for item in self._registry.draining()],
                "rss_bytes": self._process.memory_info().rss,
                "models_memory_bytes": sum(item.memory_bytes for item in loaded),
                "cache": self._s.inference.cache.describe(),
                "evicted": self._registry.evictions(),
                # What features add (the corpora, the periodic benchmark rounds), by section.
                **{name: section(snap) for name, section in self._seams.status_sections.items()},
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
        name, version = self._registry.pinned_or_active(request.model)
        return Queued("control", lambda: Outcome(describe_loaded(self._registry, self._registry.get(name, version))))

    def _op_encode(self, request: Request) -> Deferred:
        return self._encode.prepare(request)

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
