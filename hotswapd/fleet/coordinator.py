"""A change of a fleet's state asked of this member (`hs switch`, rollback, abort, canary,
gradual), agreed with every other member in two phases before anything flips:

1. *Propose*: check the switch here (names, task, the embedding-space guard, the target
   loaded and warmed), then write a proposal naming the target and its fingerprint, in a
   transaction that holds only if the model's state is still the one read (compare-and-swap
   on its revision) and no other proposal is open.
2. *Ready*: every live member loads and warms the target and answers with its fingerprint,
   or refuses with its reason. A refusal, another fingerprint, or the deadline ends the
   proposal; nothing flipped, and the reply names the member and why.
3. *Commit*: one transaction writes the new state (its revision is the new generation) if
   the proposal is still ours and the state unchanged. Every member applies it; the reply
   comes when every live member serves it (read-your-writes across the fleet).

A member killed meanwhile loses its lease and is no longer waited for.
"""

from __future__ import annotations

import logging
from dataclasses import replace
import time
import uuid
from typing import TYPE_CHECKING, Any

from hotswapd.core.switch_request import SwitchRequest, new_rollout, summary
from hotswapd.errors import FleetRefused, FleetUnavailable, NothingToRollBack, RequestError, UnknownModel
from hotswapd.fleet.etcd_store import delete_op, mod_revision_is, put_op, record_bytes, value_is
from hotswapd.fleet.member import FleetMember
from hotswapd.fleet.state import Desired, FleetRollout, FleetView, Proposal

if TYPE_CHECKING:
    from hotswapd.core.registry import Registry
    from hotswapd.core.switching import Switchboard

log = logging.getLogger(__name__)
WAIT_POLL_SECONDS = 0.05


class FleetOwner:
    """The fleet as the owner of this daemon's serving state (:class:`hotswapd.core.seams.StateOwner`)."""

    def __init__(self, member: FleetMember, registry: Registry, switchboard: Switchboard) -> None:
        self.member = member
        self._registry = registry
        self._switchboard = switchboard
        self._keys = member.keys

    # -- StateOwner ---------------------------------------------------------------------
    def switch(self, request: SwitchRequest) -> dict[str, Any]:
        if request.trigger == "config":
            return self._from_file(request)
        view = self._fresh_view()
        desired, generation = self._state(view, request.model)
        current = desired.active
        rollout = desired.rollout
        if request.step_requests is not None:
            raise RequestError("a fleet steps a gradual rollout by time (--step-seconds): a request count is one member's, not the fleet's")
        if request.target == current and rollout is None:
            self._switchboard.check(request, current)
            return {**summary(request, current, "unchanged"), "generation": generation, "persisted": True}
        promoting = rollout is not None and rollout.target == request.target and request.strategy == "immediate"
        self._switchboard.check(request, current, promoting=promoting)
        loaded = self._registry.peek(request.model, request.target)
        fingerprint = loaded.fingerprint if loaded is not None else None
        now = time.time()
        fingerprints = {**desired.fingerprints, request.target: fingerprint}
        if request.strategy == "immediate":
            previous = current if current != request.target else desired.previous
            new = Desired(active=request.target, previous=previous, fingerprints={request.target: fingerprint}, change=request.event, by=self.member.name, at=now)
        else:
            model_cfg = self._registry.config.models[request.model]
            planned = new_rollout(request, model_cfg, current)
            step_seconds = planned.step_seconds if request.strategy == "gradual" else None
            if request.strategy == "gradual" and step_seconds is None:
                raise RequestError("a fleet steps a gradual rollout by time: give --step-seconds (or rollout.step_seconds in the config)")
            fleet_rollout = FleetRollout(source=current, target=request.target, strategy=planned.strategy, share=planned.share, sticky=planned.sticky,  # type: ignore[arg-type]
                                         steps=list(planned.steps), step_seconds=step_seconds, step_started_at=now)
            new = Desired(active=current, previous=desired.previous, rollout=fleet_rollout, fingerprints=fingerprints, change=request.event, by=self.member.name, at=now)
        committed, members, lagging = self._two_phase(view, request.model, request.target, fingerprint, generation, new)
        outcome = "done" if request.strategy == "immediate" else "started"
        return {**summary(request, current, outcome), "generation": committed, "members": members, "lagging": lagging, "persisted": True}

    def _from_file(self, request: SwitchRequest) -> dict[str, Any]:
        """A member's file changed its `active`: the file is this member's own default, so it
        applies here only, and only while the fleet has committed no state for the model
        (then the fleet's state wins, on every member alike)."""
        view = self.member.view
        if view is not None and request.model in view.desired:
            current = view.desired[request.model][0].active
            log.warning("fleet: %s's file asks for %s; the fleet's committed %s stays (change it with hs switch)", request.model, request.target, current)
            return {**summary(request, current, "unchanged"), "reason": "the fleet's committed state wins over the file"}
        return self._switchboard.switch(replace(request, local=True))

    def rollback(self, model: str, *, trigger: str, client: str | None) -> dict[str, Any]:
        view = self._fresh_view()
        desired, _ = self._state(view, model)
        if desired.rollout is not None:
            return self.abort(model, reason="rolled back by request", event="rollback", trigger=trigger, client=client)
        if desired.previous is None:
            raise NothingToRollBack(f"{model} has no previous version to roll back to")
        return self.switch(SwitchRequest(model, desired.previous, trigger=trigger, event="rollback", check_space=False, client=client))

    def abort(self, model: str, *, reason: str, event: str, trigger: str, client: str | None) -> dict[str, Any]:
        """End a rollout everywhere: its source serves alone (loaded on every member already)."""
        view = self._fresh_view()
        desired, generation = self._state(view, model)
        rollout = desired.rollout
        if rollout is None:
            raise NothingToRollBack(f"{model} has no rollout in progress")
        new = desired.model_copy(update={"active": rollout.source, "rollout": None, "change": event, "by": self.member.name, "at": time.time(), "reason": reason})
        committed = self.member.commit(model, generation, new)
        if committed is None:
            raise FleetRefused(f"{model} changed in the fleet meanwhile (another member's change); look at `hs fleet status` and try again")
        members, lagging = self._wait_applied(model, committed, time.monotonic() + self.member.config.switch_timeout_seconds)
        return {"model": model, "from": rollout.target, "to": rollout.source, "strategy": rollout.strategy, "outcome": "aborted", "reason": reason,
                "generation": committed, "members": members, "lagging": lagging, "persisted": True}

    def unhealthy(self, model: str, version: str, reason: str) -> None:
        self.member.unhealthy(model, version, reason)

    # -- the two phases -----------------------------------------------------------------
    def _fresh_view(self) -> FleetView:
        if not self.member.connected:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.member.degraded_since or 0))
            raise FleetUnavailable(f"{self.member.name} has not reached etcd since {since} ({self.member.last_error}): "
                                   "it serves the last committed state and refuses fleet changes until it reconnects")
        if not self.member.lease:
            raise FleetUnavailable(f"{self.member.name} has not joined fleet {self.member.config.name!r} yet ({self.member.last_error})")
        revision, entries = self.member.store.range(self._keys.root)
        return FleetView(self._keys, revision, entries)

    def _state(self, view: FleetView, model: str) -> tuple[Desired, int]:
        """The model's committed state and generation; before the fleet's first change of it
        (or over a record that does not parse), this member's own route."""
        if model in view.desired:
            return view.desired[model]
        route = self._registry.published.current.routes.get(model)
        if route is None:
            raise UnknownModel(f"unknown model {model!r}")
        # A damaged record (its revision known, its content not) is replaced by this change.
        return Desired(active=route.active, previous=route.previous), view.revisions.get(model, 0)

    def _open_proposal(self, view: FleetView, model: str) -> int:
        """The revision of a proposal this switch may replace (0: none there); FleetRefused
        while another member's switch is still under way. A proposal is left over when it
        does not parse, its proposer is gone, or it is past its deadline by another whole
        timeout (slack for clocks that disagree): then the next switch replaces it."""
        revision = view.proposal_revisions.get(model, 0)
        found = view.proposals.get(model)
        if not revision or found is None:
            return revision
        other = found[0]
        over = other.deadline + self.member.config.switch_timeout_seconds < time.time()
        if other.by in view.members and not over:
            raise FleetRefused(f"{model}: {other.by} is switching it to {other.version}; try again when that is done")
        log.warning("fleet: replacing %s's left-over proposal of %s@%s (%s)", other.by, model, other.version, "past its deadline" if over else "its member is gone")
        return revision

    def _two_phase(self, view: FleetView, model: str, version: str, fingerprint: str | None, generation: int, new: Desired) -> tuple[int, list[str], list[str]]:
        timeout = self.member.config.switch_timeout_seconds
        deadline = time.monotonic() + timeout
        proposal = Proposal(id=uuid.uuid4().hex, model=model, version=version, fingerprint=fingerprint, by=self.member.name, deadline=time.time() + timeout)
        raw = record_bytes(proposal.model_dump())
        store = self.member.store
        replaced = self._open_proposal(view, model)
        leftover = view.proposals.get(model)
        clear = [delete_op(self._keys.ready_prefix(leftover[0].id), prefix=True)] if replaced and leftover is not None else []
        ok, _ = store.txn([mod_revision_is(self._keys.desired(model), generation), mod_revision_is(self._keys.proposal(model), replaced)],
                          [put_op(self._keys.proposal(model), raw, lease=self.member.lease), *clear])
        if not ok:
            view = self._fresh_view()
            other = view.proposals.get(model)
            if other is not None:
                raise FleetRefused(f"{model}: {other[0].by} is switching it to {other[0].version}; try again when that is done")
            raise FleetRefused(f"{model} changed in the fleet meanwhile (another member's change); try again")
        self.member.ring()
        try:
            members = self._wait_ready(model, proposal, deadline)
            ok, committed = store.txn(
                [value_is(self._keys.proposal(model), raw), mod_revision_is(self._keys.desired(model), generation)],
                [put_op(self._keys.desired(model), new.model_dump()), delete_op(self._keys.proposal(model)), delete_op(self._keys.ready_prefix(proposal.id), prefix=True)],
            )
            if not ok:
                raise FleetRefused(f"{model}: the proposal lapsed before it committed (its member's lease or the deadline); nothing flipped")
        except BaseException:
            self._withdraw(model, proposal.id, raw)
            raise
        log.info("fleet: %s -> %s committed at generation %d (%s)", model, version, committed, ", ".join(members))
        self.member.ring()
        return (committed, *self._wait_applied(model, committed, deadline))

    def _withdraw(self, model: str, proposal: str, raw: bytes) -> None:
        """Delete this switch's proposal (only while it is still this one: a compare on its
        value) and its answers."""
        try:
            self.member.store.txn([value_is(self._keys.proposal(model), raw)],
                                  [delete_op(self._keys.proposal(model)), delete_op(self._keys.ready_prefix(proposal), prefix=True)])
        except FleetUnavailable:
            self.member.withdraw_later(model, proposal)  # etcd missed it: the member loop deletes it when it can

    def _wait_ready(self, model: str, proposal: Proposal, deadline: float) -> list[str]:
        """Every live member's ready answer with the proposal's fingerprint; else FleetRefused."""
        while True:
            view = self._fresh_view()
            answers = {member: answer for member, answer in view.ready.get(proposal.id, {}).items() if member in view.members}
            for member, answer in sorted(answers.items()):
                if answer.refused:
                    raise FleetRefused(f"{model}@{proposal.version}: member {member} refused: {answer.refused}; nothing flipped")
                if answer.fingerprint != proposal.fingerprint:
                    raise FleetRefused(f"{model}@{proposal.version}: member {member} serves fingerprint {answer.fingerprint}, "
                                       f"not {proposal.fingerprint} (its files differ); nothing flipped")
            live = sorted(view.members)
            waiting = [member for member in live if member not in answers]
            if not waiting and live:
                return live
            if time.monotonic() > deadline:
                raise FleetRefused(f"{model}@{proposal.version}: {', '.join(waiting) or 'no member'} did not report ready within "
                                   f"{self.member.config.switch_timeout_seconds:g} s; nothing flipped")
            time.sleep(WAIT_POLL_SECONDS)

    def _wait_applied(self, model: str, generation: int, deadline: float) -> tuple[list[str], list[str]]:
        """Wait until every live member serves ``generation`` of ``model`` (or the deadline):
        (the live members, those that did not serve it in time)."""
        while True:
            view = self._fresh_view()
            lagging = sorted(name for name, report in view.members.items() if report.applied.get(model, 0) < generation)
            if not lagging or time.monotonic() > deadline:
                if lagging:
                    log.warning("fleet: %s generation %d committed, but %s did not serve it within the deadline", model, generation, ", ".join(lagging))
                return sorted(view.members), lagging
            time.sleep(WAIT_POLL_SECONDS)
