"""This daemon's part in a fleet: it keeps a lease in etcd (live while it renews), watches
the fleet's keys, answers proposals (loads, warms and reports the target's fingerprint),
applies what the fleet committed (one published snapshot, with the generation), reports
what it serves, and acts for the fleet on health breaches and gradual steps (by
compare-and-swap: when several members try, one wins).

Two threads: ``fleet-lease`` renews the lease and the member's report and notices etcd
going away and coming back; ``fleet-member`` reconciles, and may spend minutes loading a
version, which must not stop the lease from being renewed. Neither ends on an exception.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from hotswapd import __version__
from hotswapd.config.fleet_section import FleetConfig
from hotswapd.errors import FleetUnavailable, HotswapError
from hotswapd.fleet.etcd_store import EtcdStore, delete_op, mod_revision_is, put_op, value_is
from hotswapd.fleet.state import Desired, FleetKeys, FleetRollout, FleetView, MemberReport, Readiness

if TYPE_CHECKING:
    from hotswapd.core.registry import Registry
    from hotswapd.core.switching import Switchboard

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # a reconcile at least this often, watch or not
RETRY_APPLY_SECONDS = 10.0  # a state that failed to apply is tried again after this long


class FleetMember:
    def __init__(self, config: FleetConfig, store: EtcdStore, registry: Registry, switchboard: Switchboard) -> None:
        self.config = config
        self.name = config.member
        self.store = store
        self.keys = FleetKeys(config.name)
        self._registry = registry
        self._switchboard = switchboard
        self._bell = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._reporting = threading.Lock()
        self.lease = 0
        self.degraded_since: float | None = time.time()  # until the first contact
        self.last_error: str | None = "not connected yet"
        self.view: FleetView | None = None
        self.applied: dict[str, int] = {}  # model -> the generation applied here
        self.apply_error: str | None = None
        self._failed: dict[tuple[str, int], float] = {}  # (model, generation) -> when applying it failed
        self._answered: set[str] = set()
        self._withdrawals: dict[str, str] = {}  # model -> this member's proposal to delete (a withdrawal etcd missed)
        self._applied_at: dict[str, tuple[int, float]] = {}  # model -> (generation, when it was applied here: monotonic)
        self._breaches: dict[tuple[str, str], str] = {}  # (model, version) -> reason, to report
        self._watch_cancel: Any = None
        self._watching = False
        self._threads: list[threading.Thread] = []
        self.joined = threading.Event()  # set after the first reconcile with the fleet's state

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        for name, loop in (("fleet-lease", self._lease_loop), ("fleet-member", self._member_loop)):
            thread = threading.Thread(target=self._forever, args=(loop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Leave the fleet: revoke the lease (the member's keys go at once, so no switch waits
        for it), stop watching."""
        self._stop.set()
        self._bell.set()
        self._cancel_watch()
        for thread in self._threads:
            thread.join(5)
        if self.lease:
            try:
                self.store.revoke(self.lease)
            except HotswapError:
                pass

    def ring(self) -> None:
        self._bell.set()

    def _forever(self, loop: Any) -> None:
        while not self._stop.is_set():
            try:
                loop()
            except Exception:  # noqa: BLE001 -- a bug here must not end the thread (nor the daemon)
                log.exception("fleet: %s failed; going on", threading.current_thread().name)
                self._stop.wait(1.0)

    @property
    def connected(self) -> bool:
        return self.degraded_since is None

    def _lost(self, exc: HotswapError) -> None:
        with self._lock:
            if self.degraded_since is None:
                self.degraded_since = time.time()
                log.warning("fleet: lost etcd (%s); serving the last committed state and refusing fleet changes", exc.message)
            self.last_error = exc.message

    def _reached(self) -> None:
        with self._lock:
            if self.degraded_since is not None:
                log.info("fleet: etcd reached (%s); converging", self.store.endpoint)
                self.degraded_since = None
                self.last_error = None
                self._bell.set()

    # -- the lease ----------------------------------------------------------------------
    def _lease_loop(self) -> None:
        period = self.config.lease_seconds / 3
        try:
            if not self.lease:
                lease = self.store.grant(self.config.lease_seconds)
                if not self._claim(lease):
                    self.store.revoke(lease)
                    raise FleetUnavailable(f"the member name {self.name!r} is held by another live daemon of fleet {self.config.name!r} "
                                           "(set [fleet] member to a name of its own; a restarted member waits for its old lease to lapse)")
                self.lease = lease
                self.report()
                self._bell.set()
            elif self.store.keep_alive(self.lease) <= 0:
                log.warning("fleet: the lease of %s expired; joining again", self.name)
                self.lease = 0
                self._answered.clear()  # its answers went with the lease
                return
            else:
                self.report()
            self._reached()
        except FleetUnavailable as exc:
            self._lost(exc)
        self._stop.wait(period)

    def _claim(self, lease: int) -> bool:
        """Take this member's key under ``lease``, unless another live daemon holds it."""
        key = self.keys.member(self.name)
        placeholder = MemberReport(member=self.name, seen=time.time(), version=__version__).model_dump()
        ok, _ = self.store.txn([mod_revision_is(key, 0)], [put_op(key, placeholder, lease)])
        return ok

    def report(self) -> None:
        """Publish what this member serves, under its lease (it goes when the member does).
        Built and written under one lock: before, the lease thread's heartbeat, built just
        before an apply, could land just after the apply's own report, and the switch
        waited a whole heartbeat for a member that already served it."""
        with self._reporting:
            self._report()

    def _report(self) -> None:
        if not self.lease:
            return
        snap = self._registry.published.current
        serving: dict[str, dict[str, Any]] = {}
        for model, route in snap.routes.items():
            versions = [route.rollout.source, route.rollout.target] if route.rollout is not None else [route.active]
            fingerprints = {v: (loaded.fingerprint if (loaded := snap.peek(model, v)) is not None else None) for v in versions}
            rollout = {"target": route.rollout.target, "share": route.rollout.share, "strategy": route.rollout.strategy} if route.rollout else None
            serving[model] = {"active": route.active, "rollout": rollout, "fingerprints": fingerprints}
        report = MemberReport(member=self.name, generation=snap.fleet_generation or 0, applied=dict(self.applied), serving=serving,
                              seen=time.time(), apply_error=self.apply_error, version=__version__)
        self.store.put(self.keys.member(self.name), report.model_dump(), lease=self.lease)

    # -- reconciling --------------------------------------------------------------------
    def _member_loop(self) -> None:
        self._bell.wait(POLL_SECONDS)
        self._bell.clear()
        if self._stop.is_set():
            return
        try:
            self._ensure_watch()
            revision, entries = self.store.range(self.keys.root)
            view = FleetView(self.keys, revision, entries)
            self.view = view
            if self.lease:  # joined: the lease loop's to say (a member whose name is taken is not)
                self._reached()
            self.reconcile(view)
            self.joined.set()
        except FleetUnavailable as exc:
            self._lost(exc)

    def _ensure_watch(self) -> None:
        if self._watching:
            return

        def ended() -> None:
            self._watching = False

        self._watch_cancel = self.store.watch(self.keys.root, self._bell.set, ended)
        self._watching = True

    def _cancel_watch(self) -> None:
        cancel, self._watch_cancel = self._watch_cancel, None
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001 -- closing a broken stream may raise anything
                pass

    def reconcile(self, view: FleetView) -> None:
        self._withdraw_leftovers(view)
        # Any open proposal is answered: whether it is past its deadline is its proposer's to
        # judge (this member's clock may differ); a withdrawn one is gone from etcd.
        for model, (proposal, raw) in view.proposals.items():
            if proposal.id not in self._answered and self.lease:
                self._answer(model, proposal.id, proposal.version, proposal.fingerprint, raw)
        self._answered &= {proposal.id for proposal, _ in view.proposals.values()}
        changed = False
        for model, (desired, generation) in view.desired.items():
            changed |= self._apply(model, desired, generation)
        if changed:
            self.report()
        self._report_breaches(view)
        self._act_for_the_fleet(view)

    def withdraw_later(self, model: str, proposal: str) -> None:
        """A proposal of this member's whose withdrawal etcd did not take: deleted at the next reconcile."""
        with self._lock:
            self._withdrawals[model] = proposal

    def _withdraw_leftovers(self, view: FleetView) -> None:
        with self._lock:
            pending = dict(self._withdrawals)
        for model, proposal in pending.items():
            found = view.proposals.get(model)
            if found is not None and found[0].id == proposal:
                self.store.txn([value_is(self.keys.proposal(model), found[1])],
                               [delete_op(self.keys.proposal(model)), delete_op(self.keys.ready_prefix(proposal), prefix=True)])
            with self._lock:
                if self._withdrawals.get(model) == proposal:
                    del self._withdrawals[model]

    def _answer(self, model: str, proposal: str, version: str, fingerprint: str | None, raw: bytes) -> None:
        """Load and warm ``version``, and say whether it serves the fingerprint the switch named."""
        answer: Readiness
        try:
            self._switchboard.prepare(model, version)
            loaded = self._registry.peek(model, version)
            mine = loaded.fingerprint if loaded is not None else None
            if mine != fingerprint:
                answer = Readiness(fingerprint=mine, refused=f"{self.name} serves {model}@{version} as fingerprint {mine}, not {fingerprint}: its files differ")
            else:
                answer = Readiness(fingerprint=mine)
        except HotswapError as exc:
            answer = Readiness(refused=f"{self.name} cannot serve {model}@{version}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 -- whatever the load raised, the switch gets the reason
            answer = Readiness(refused=f"{self.name} cannot serve {model}@{version}: {type(exc).__name__}: {exc}")
        # Only while the proposal is still open: an answer to a withdrawn one would stay behind.
        self.store.txn([value_is(self.keys.proposal(model), raw)], [put_op(self.keys.ready(proposal, self.name), answer.model_dump(exclude_none=True), self.lease)])
        self._answered.add(proposal)

    def _apply(self, model: str, desired: Desired, generation: int) -> bool:
        """Serve ``desired`` here (loading what it needs first). True when it changed something."""
        snap = self._registry.published.current
        route = snap.routes.get(model)
        if route is None:  # not a model of this member's config
            return False
        if self.applied.get(model) == generation and desired.same_as(route):
            return False
        failed_at = self._failed.get((model, generation))
        if failed_at is not None and time.monotonic() - failed_at < RETRY_APPLY_SECONDS:
            return False
        try:
            for version in desired.serving():
                self._switchboard.prepare(model, version)
        except HotswapError as exc:
            self._failed[(model, generation)] = time.monotonic()
            self.apply_error = f"{model} generation {generation}: {exc.message}"
            log.error("fleet: cannot serve %s as committed at generation %d: %s", model, generation, exc.message)
            return True
        before = route.rollout.target if route.rollout is not None else route.active
        after = desired.rollout.target if desired.rollout is not None else desired.active
        audit = {"event": desired.change, "from": before, "to": after, "by": desired.by,
                 "strategy": desired.rollout.strategy if desired.rollout else "immediate",
                 "share": desired.rollout.share if desired.rollout else None, "reason": desired.reason}
        if self._switchboard.adopt(model, desired.route(), generation, audit):
            self.applied[model] = generation
            self._applied_at[model] = (generation, time.monotonic())
            self.apply_error = None
            self._failed = {key: at for key, at in self._failed.items() if key[0] != model}
            log.info("fleet: %s serves %s (generation %d, %s by %s)", model, after, generation, desired.change, desired.by)
        return True

    # -- acting for the fleet -----------------------------------------------------------
    def unhealthy(self, model: str, version: str, reason: str) -> None:
        """Called by the switchboard's tick while a rollout's target breaches its limits here."""
        with self._lock:
            fresh = (model, version) not in self._breaches
            self._breaches[(model, version)] = reason
        if fresh:
            self._bell.set()

    def _report_breaches(self, view: FleetView) -> None:
        with self._lock:
            breaches, self._breaches = self._breaches, {}
        for (model, version), reason in breaches.items():
            desired = view.desired.get(model)
            if desired is None or desired[0].rollout is None or desired[0].rollout.target != version or not self.lease:
                continue
            if self.name not in view.unhealthy.get((model, version), {}):
                self.store.put(self.keys.unhealthy(model, version, self.name), {"reason": reason}, lease=self.lease)
                view.unhealthy.setdefault((model, version), {})[self.name] = reason

    def _act_for_the_fleet(self, view: FleetView) -> None:
        now = time.time()
        clock = time.monotonic()
        for model, (desired, generation) in view.desired.items():
            rollout = desired.rollout
            if rollout is None:
                continue
            reports = {member: why for member, why in view.unhealthy.get((model, rollout.target), {}).items() if member in view.members}
            live = max(len(view.members), 1)
            if reports and len(reports) / live > self.config.unhealthy_share:
                reasons = "; ".join(f"{member}: {why}" for member, why in sorted(reports.items()))
                rolled = desired.model_copy(update={"active": rollout.source, "rollout": None, "change": "auto_rollback", "by": self.name, "at": now,
                                                    "reason": f"{len(reports)} of {live} members report {rollout.target} unhealthy ({reasons})"})
                self.commit(model, generation, rolled, extra=[delete_op(self.keys.unhealthy_prefix(model, rollout.target), prefix=True)])
                continue
            # A step is due step_seconds after this member applied the current one: its own
            # clock, so members' clocks need not agree (the first to find it due commits it).
            applied_at = self._applied_at.get(model)
            due = applied_at is not None and applied_at[0] == generation and clock - applied_at[1] >= (rollout.step_seconds or 0)
            if rollout.strategy == "gradual" and rollout.step_seconds is not None and due:
                self.commit(model, generation, next_step(desired, self.name, now))

    def commit(self, model: str, generation: int, desired: Desired, extra: list[dict[str, Any]] | None = None) -> int | None:
        """Write ``desired`` if the model's state is still the one at ``generation``: the
        revision it committed at, or None when another change came first."""
        ok, revision = self.store.txn([mod_revision_is(self.keys.desired(model), generation)],
                                      [put_op(self.keys.desired(model), desired.model_dump()), *(extra or [])])
        if ok:
            self._bell.set()
        return revision if ok else None


def next_step(desired: Desired, member: str, now: float) -> Desired:
    """A gradual rollout's next share, or its completion past the last step."""
    rollout = desired.rollout
    assert rollout is not None
    share = next((step for step in rollout.steps if step > rollout.share), None)
    if share is None or share >= 100:
        return desired.model_copy(update={"active": rollout.target, "previous": rollout.source, "rollout": None, "change": "rollout_complete", "by": member, "at": now})
    stepped: FleetRollout = rollout.model_copy(update={"share": share, "step_started_at": now})
    return desired.model_copy(update={"rollout": stepped, "change": "rollout_step", "by": member, "at": now})
