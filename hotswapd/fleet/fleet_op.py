"""``hs fleet status`` (op ``fleet``) and the fleet's line in ``hs status`` and ``/health``:
the members, their generations and lag, what each serves with which fingerprints, the
committed state of each model, proposals in progress, and this member's link to etcd."""

from __future__ import annotations

import time
from typing import Any

from hotswapd.core.op_types import Outcome, Queued
from hotswapd.core.seams import OpSpec
from hotswapd.errors import FleetUnavailable
from hotswapd.fleet.member import FleetMember
from hotswapd.fleet.state import FleetView
from hotswapd.wire.protocol import Request


def link(member: FleetMember, generation: int | None) -> dict[str, Any]:
    """This member's link to the fleet, for `hs status` and `/health`."""
    return {
        "name": member.config.name,
        "member": member.name,
        "state": "connected" if member.connected else "degraded",
        "degraded_since": member.degraded_since,
        "error": member.last_error,
        "etcd": member.store.endpoint,
        "generation": generation,
    }


def describe(member: FleetMember, generation: int | None) -> dict[str, Any]:
    view: FleetView | None
    stale = None
    try:
        revision, entries = member.store.range(member.keys.root)
        view = FleetView(member.keys, revision, entries)
    except FleetUnavailable as exc:
        view, stale = member.view, exc.message
    answer: dict[str, Any] = {**link(member, generation), "stale": stale, "models": {}, "members": [], "proposals": []}
    if view is None:
        return answer
    now = time.time()
    fleet_generation = view.generation
    answer["fleet_generation"] = fleet_generation
    answer["read_at"] = view.read_at
    for model, (desired, model_generation) in sorted(view.desired.items()):
        answer["models"][model] = {**desired.model_dump(), "generation": model_generation}
    for name, report in sorted(view.members.items()):
        answer["members"].append({
            "member": name, "generation": report.generation, "lag": max(0, fleet_generation - report.generation),
            "seen_seconds_ago": round(max(0.0, now - report.seen), 1), "applied": report.applied, "serving": {model: state.model_dump() for model, state in report.serving.items()},
            "apply_error": report.apply_error, "version": report.version,
        })
    for model, (proposal, _) in sorted(view.proposals.items()):
        answers = view.ready.get(proposal.id, {})
        answer["proposals"].append({
            "model": model, "version": proposal.version, "by": proposal.by, "fingerprint": proposal.fingerprint,
            "ready": sorted(m for m, a in answers.items() if not a.refused), "refused": {m: a.refused for m, a in answers.items() if a.refused},
            "waiting": sorted(set(view.members) - set(answers)),
        })
    return answer


def fleet_op(member: FleetMember) -> OpSpec:
    def build(services: Any) -> Any:
        registry = services.registry

        def handle(request: Request) -> Queued:
            return Queued("io", lambda: Outcome(describe(member, registry.published.current.fleet_generation)))

        return handle

    return OpSpec("fleet", frozenset(), build)


class FleetGauges:
    """Prometheus gauges of the fleet as this member sees it, read at scrape time: its link
    to etcd, its generation, and each member's lag (from its last read of etcd)."""

    def __init__(self, member: FleetMember, generation: Any) -> None:
        self._member = member
        self._generation = generation  # () -> this member's applied generation

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        member, labels = self._member, [self._member.config.name, self._member.name]
        connected = GaugeMetricFamily("hotswapd_fleet_connected", "1 while this member reaches etcd", labels=["fleet", "member"])
        connected.add_metric(labels, 1.0 if member.connected else 0.0)
        generation = GaugeMetricFamily("hotswapd_fleet_generation", "The fleet generation this member serves", labels=["fleet", "member"])
        generation.add_metric(labels, float(self._generation() or 0))
        lag = GaugeMetricFamily("hotswapd_fleet_member_lag", "Generations each member is behind the fleet (this member's last read)", labels=["fleet", "member"])
        view = member.view
        if view is not None:
            for name, report in view.members.items():
                lag.add_metric([member.config.name, name], float(max(0, view.generation - report.generation)))
        yield from (connected, generation, lag)
