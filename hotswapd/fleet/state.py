"""The fleet's keys in etcd, and the records kept under them.

Under ``/hotswap/fleets/<fleet>/``:

- ``desired/<model>``: :class:`Desired`, the model's committed state (active version,
  rollout, the fingerprints every member must serve). Its ``mod_revision`` is the model's
  generation; the largest applied on a member is that member's generation.
- ``proposals/<model>``: :class:`Proposal`, a change waiting for every member to be ready
  (leased by the proposing member: it goes when that member does).
- ``ready/<proposal>/<member>``: :class:`Readiness`, a member's answer to a proposal.
- ``members/<member>``: :class:`MemberReport`, leased: a member is live while it is there.
- ``unhealthy/<model>/<version>/<member>``: a member's health breach of a rollout's target.

Anything may write etcd, so every record is read through a strict model, and one that does
not parse is ignored (and logged), never trusted.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hotswapd.core.rollout import Rollout, Route

log = logging.getLogger(__name__)
Name = str


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class FleetRollout(_Record):
    source: str
    target: str
    strategy: Literal["canary", "split", "gradual"]
    share: float = Field(gt=0, le=100)
    sticky: bool = False
    steps: list[float] = []
    step_seconds: float | None = Field(default=None, gt=0)
    step_started_at: float = 0.0  # wall clock: every member (and whoever advances it) reads the same

    def rollout(self, started_at: float) -> Rollout:
        """The local rollout (its steps advanced by the fleet, never by one member's clock)."""
        return Rollout(source=self.source, target=self.target, strategy=self.strategy, share=self.share, sticky=self.sticky,
                       steps=tuple(self.steps), trigger="fleet", started_at=started_at)


class Desired(_Record):
    active: str
    previous: str | None = None
    rollout: FleetRollout | None = None
    fingerprints: dict[str, str | None] = {}  # version -> what every member must serve
    change: str = "switch"  # switch | rollback | abort | auto_rollback | rollout_step | rollout_complete
    by: str = ""
    at: float = 0.0
    reason: str | None = None

    def route(self, previous_route: Route | None = None) -> Route:
        rollout = self.rollout.rollout(self.at) if self.rollout is not None else None
        return Route(active=self.active, previous=self.previous, rollout=rollout)

    def serving(self) -> list[str]:
        return [self.rollout.source, self.rollout.target] if self.rollout is not None else [self.active]

    def same_as(self, route: Route) -> bool:
        """Whether ``route`` already serves this state."""
        if route.active != self.active:
            return False
        if self.rollout is None or route.rollout is None:
            return self.rollout is None and route.rollout is None
        mine, theirs = self.rollout, route.rollout
        return (mine.source, mine.target, mine.strategy, mine.share, mine.sticky) == (theirs.source, theirs.target, theirs.strategy, theirs.share, theirs.sticky)


class Proposal(_Record):
    id: str
    model: str
    version: str  # the version every member must load, warm and report ready
    fingerprint: str | None
    by: str
    deadline: float  # wall clock


class Readiness(_Record):
    fingerprint: str | None = None
    refused: str | None = None


class ServingRollout(_Record):
    target: str
    share: float
    strategy: str


class Serving(_Record):
    active: str
    rollout: ServingRollout | None = None
    fingerprints: dict[str, str | None] = {}


class MemberReport(_Record):
    member: str
    generation: int = 0
    applied: dict[str, int] = {}  # model -> the generation of its state served here
    serving: dict[str, Serving] = {}
    seen: float = 0.0
    apply_error: str | None = None
    version: str = ""


class FleetKeys:
    def __init__(self, fleet: str) -> None:
        self.root = f"/hotswap/fleets/{fleet}/"

    def desired(self, model: str) -> str:
        return f"{self.root}desired/{model}"

    def proposal(self, model: str) -> str:
        return f"{self.root}proposals/{model}"

    def ready_prefix(self, proposal: str) -> str:
        return f"{self.root}ready/{proposal}/"

    def ready(self, proposal: str, member: str) -> str:
        return f"{self.ready_prefix(proposal)}{member}"

    def member(self, member: str) -> str:
        return f"{self.root}members/{member}"

    def unhealthy_prefix(self, model: str, version: str) -> str:
        return f"{self.root}unhealthy/{model}/{version}/"

    def unhealthy(self, model: str, version: str, member: str) -> str:
        return f"{self.unhealthy_prefix(model, version)}{member}"


class FleetView:
    """One read of everything under the fleet's root, parsed."""

    def __init__(self, keys: FleetKeys, revision: int, entries: list[Any]) -> None:
        self.revision = revision
        self.read_at = time.time()
        self.desired: dict[str, tuple[Desired, int]] = {}  # model -> (state, its generation)
        # Every desired key's revision, parsed or not: a change compares against it, so a
        # damaged record is overwritten by the next switch instead of blocking it forever.
        self.revisions: dict[str, int] = {}
        self.proposals: dict[str, tuple[Proposal, bytes]] = {}  # model -> (proposal, its raw value for a compare)
        self.proposal_revisions: dict[str, int] = {}  # model -> its proposal's revision, parsed or not
        self.ready: dict[str, dict[str, Readiness]] = {}  # proposal -> member -> answer
        self.members: dict[str, MemberReport] = {}
        self.unhealthy: dict[tuple[str, str], dict[str, str]] = {}  # (model, version) -> member -> reason
        for entry in entries:
            rest = entry.key.removeprefix(keys.root)
            kind, _, name = rest.partition("/")
            if kind == "desired" and "/" not in name:
                self.revisions[name] = entry.mod_revision
            if kind == "proposals" and "/" not in name:
                self.proposal_revisions[name] = entry.mod_revision
            try:
                data = entry.json()
                if data is None:
                    raise ValueError("not a JSON object")
                if kind == "desired" and "/" not in name:
                    self.desired[name] = (Desired.model_validate(data), entry.mod_revision)
                elif kind == "proposals" and "/" not in name:
                    self.proposals[name] = (Proposal.model_validate(data), entry.value)
                elif kind == "ready" and name.count("/") == 1:
                    proposal, member = name.split("/")
                    self.ready.setdefault(proposal, {})[member] = Readiness.model_validate(data)
                elif kind == "members" and "/" not in name:
                    report = MemberReport.model_validate(data)
                    # Live only under a lease: a record written by hand would be waited for ever.
                    if report.member == name and entry.lease:
                        self.members[name] = report
                elif kind == "unhealthy" and name.count("/") == 2:
                    model, version, member = name.split("/")
                    self.unhealthy.setdefault((model, version), {})[member] = str(data.get("reason", ""))[:500]
            except (ValidationError, ValueError) as exc:
                log.warning("fleet: ignoring %s in etcd: %s", entry.key[:200], str(exc).splitlines()[0][:200])

    @property
    def generation(self) -> int:
        return max((revision for _, revision in self.desired.values()), default=0)
