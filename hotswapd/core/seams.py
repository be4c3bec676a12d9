"""Where features plug into the serving core.

The core names no feature. A feature offers what it adds through one of these seams, and
the composition root (:mod:`hotswapd.daemon.main`) wires each in with one line:

- an **op** (:class:`OpSpec`): a request name, the options it takes, and how to build its
  handler from the daemon's services. ``search`` (corpus) and ``tune`` (tuning) are ops.
- a **version hook** (:class:`VersionHook`): what a feature adds to every loaded version.
  The registry asks it, before a load, how much memory it will add; after the load it
  attaches its part (:class:`Attachment`, closed with the version); a switch asks it
  whether the switch may skip the embedding-space check (or must be refused); ``hs
  models`` shows its facts; a reload and the ticker ask it to check its part against the
  files it came from. The corpus of a version is a hook.
- an **assembler** (:data:`Assembler`): a kind of version built from other loaded versions
  instead of from files (an ensemble), named by the backend name the config uses for it.
- a **status section**: a named callable whose value ``hs status`` shows (the periodic
  benchmark rounds, the corpora).
- a **state owner** (:class:`StateOwner`): where the changes of state a client asks for
  (switch, rollback, abort) and the health breaches of rollouts go when this daemon does
  not own its state alone (a fleet member). It applies them through the switchboard itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig
    from hotswapd.core.op_types import Deferred, Outcome, Queued
    from hotswapd.core.snapshot import Snapshot
    from hotswapd.pipeline.loaded import LoadedVersion
    from hotswapd.wire.protocol import Request

EventSink = Callable[..., Any]
Handler = Callable[["Request"], "Outcome | Queued | Deferred"]
Lease = Callable[[str, str], "LoadedVersion"]
Release = Callable[["LoadedVersion"], None]
# (model, version, spec, lease, release) -> the assembled version, its parts leased.
Assembler = Callable[[str, str, "VersionConfig", Lease, Release], "LoadedVersion"]


@dataclass(frozen=True)
class OpSpec:
    """A request op: its name on the wire, the options it accepts, and its handler's factory,
    called once when the daemon is built with its :class:`hotswapd.core.services.Services`
    (typed loosely here: the services name the registry, which reads these seams)."""

    name: str
    options: frozenset[str]
    build: Callable[[Any], Handler]


class VersionHook(Protocol):
    """What a feature adds to each loaded version. ``name`` keys its facts in ``hs models``."""

    name: str

    def expected_bytes(self, spec: VersionConfig) -> int:
        """Memory it will add to the version (counted in the budget before the load)."""
        ...

    def on_load(self, loaded: LoadedVersion, on_event: EventSink) -> None:
        """Attach its part to a version just loaded (never raises: a problem is recorded)."""
        ...

    def switch_check(self, current: LoadedVersion, target: LoadedVersion) -> bool:
        """Before a switch: True when the switch needs no shared embedding space (what the
        vectors are compared with moves with the version); raises a typed error to refuse."""
        ...

    def describe(self, loaded: LoadedVersion) -> dict[str, Any] | None:
        """Its facts about a loaded version, for ``hs models`` and ``hs status``."""
        ...

    def refresh(self, loaded: LoadedVersion, on_event: EventSink) -> str | None:
        """Check its part against the files it came from and swap in what changed on disk
        (what it did, or None). Called on a reload and every few seconds; never raises."""
        ...


class StateOwner(Protocol):
    """Takes the changes of serving state asked of this daemon (a fleet agrees them with its
    other members, then applies them here with trigger "fleet")."""

    def switch(self, request: Any) -> dict[str, Any]: ...

    def rollback(self, model: str, *, trigger: str, client: str | None) -> dict[str, Any]: ...

    def abort(self, model: str, *, reason: str, event: str, trigger: str, client: str | None) -> dict[str, Any]: ...

    def unhealthy(self, model: str, version: str, reason: str) -> None:
        """A rollout's target breached its health limits here (called every tick while it does)."""
        ...


class Attachment(Protocol):
    """A feature's part of a loaded version, closed with it (after its last request)."""

    def close(self) -> None: ...


@dataclass
class Seams:
    """What the composition root plugged in; the core reads it, never a feature module."""

    ops: dict[str, OpSpec] = field(default_factory=dict)
    version_hooks: list[VersionHook] = field(default_factory=list)
    assemblers: dict[str, Assembler] = field(default_factory=dict)
    status_sections: dict[str, Callable[[Snapshot], Any]] = field(default_factory=dict)
    state_owner: StateOwner | None = None

    def add_op(self, spec: OpSpec) -> None:
        if spec.name in self.ops:
            raise ValueError(f"op {spec.name!r} is registered twice")
        self.ops[spec.name] = spec
