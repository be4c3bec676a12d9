"""Switching versions: the active pointer, rollouts, rollback, health gates, persistence.

Decisions about *which* version serves a request are made here, on the socket thread,
with :meth:`Switchboard.pick`; a request then runs on the version it was given, so a
switch never changes the version under a request in flight. Anything slow (loading the
target, warming it up, the compatibility probe) runs on the control thread before the
pointer moves, and the move itself is one published snapshot (:mod:`hotswapd.core.snapshot`):
``pick`` reads the routes of the snapshot in force and takes no lock.

``_changes`` serialises changes of state together with their state-file write and audit
entry (disk I/O), and ``pick`` never waits on it; ``_lock`` guards only the bookkeeping of
steps in progress and versions to release.
Warm-up and agreement probes run on the inference thread (``exclusive``), never beside a
live batch, under a lease on each version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hotswapd.config.schema import Config, ModelConfig
from hotswapd.core.snapshot import Snapshot
from hotswapd.core.audit import AuditLog
from hotswapd.core.compat import agreement, describe_space, incompatibilities
from hotswapd.core.health import HealthBook
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.core.registry import Registry
from hotswapd.core.rollout import STRATEGIES, Rollout, Route, restored, routes_for
from hotswapd.core.statefile import StateFile
from hotswapd.core.switch_request import SwitchRequest, new_rollout, persisted, summary
from hotswapd.errors import (
    HotswapError,
    IncompatibleVersions,
    ModelLoadError,
    NothingToRollBack,
    RequestError,
    UnknownModel,
    UnknownVersion,
)

log = logging.getLogger(__name__)
TICK_SECONDS = 0.1
T = TypeVar("T")
Exclusive = Callable[[Callable[[], Any]], Any]
WARM_UP_TEXTS = ["hotswap warm-up", "a second, somewhat longer warm-up sentence for the new version"]


class Switchboard:
    def __init__(self, registry: Registry, health: HealthBook, audit: AuditLog, state: StateFile, schedule: Callable[[Callable[[], None]], None], exclusive: Exclusive | None = None) -> None:
        self._registry = registry
        self._health = health
        self._audit = audit
        self._state = state
        self._schedule = schedule  # runs work on the control thread
        self._exclusive: Exclusive = exclusive or (lambda work: work())
        self._published = registry.published  # the one serving state, shared with the registry
        self._lock = threading.Lock()
        self._changes = threading.RLock()
        self._advancing: set[str] = set()
        self._releases: list[tuple[float, str, str]] = []
        self._last_tick = 0.0

    # -- routing -------------------------------------------------------------------------
    def pick(self, model: str, key: str | None = None, snapshot: Snapshot | None = None) -> str:
        """The version that serves this request, from ``snapshot`` (the one in force if None)."""
        route = (snapshot or self._published.current).routes.get(model)
        if route is None:
            raise UnknownModel(f"unknown model {model!r}")
        return route.choose(model, key)

    def settle(self) -> None:
        """Wait until no change is half-recorded: a change is visible to ``pick`` and ``status``
        before its state-file write and audit entry are done (they happen outside the routing
        lock), so a reader of the audit log calls this first and never lags behind status."""
        with self._changes:
            pass

    def route(self, model: str) -> Route:
        return self._published.current.routes[model]

    # -- config --------------------------------------------------------------------------
    def adopt_config(self, config: Config, also: Callable[[Snapshot], Snapshot] | None = None) -> list[str]:
        """Publish ``config`` with routes brought in line with it, in one snapshot together
        with ``also`` (the registry's part of a reload); returns models whose file `active`
        changed (the caller switches them)."""
        changed: list[str] = []

        def change(snap: Snapshot) -> Snapshot:
            if also is not None:
                snap = also(snap)
            routes, moved = routes_for(config, snap.routes)
            changed[:] = moved
            return snap.with_config(config).with_routes(routes)

        with self._changes:
            self._published.publish(change)
            self._persist()
        return changed

    def restore(self, saved: dict[str, Any], config: Config) -> None:
        """Re-apply state persisted by an earlier run, where the file has not changed since."""
        with self._changes:
            self._published.publish(lambda snap: snap.with_routes(restored(saved, config, snap.routes)))
            self._persist()

    def _persist(self) -> str | None:
        """Write the routes in force (call with ``_changes`` held: it fsyncs). None when
        written; else why not. A change that cannot be persisted stays applied (the daemon
        serves what it was told) and is reported and audited as not persisted: a restart
        would bring back the last state that was."""
        routes = self._published.current.routes
        data = {"models": {name: route.to_dict() for name, route in routes.items()}}
        return None if self._state.save(data) else self._state.last_error

    def _publish_route(self, model: str, change: Callable[[Route], Route | None]) -> Route | None:
        """Publish ``change(route)`` as the model's route; None (and nothing published) when
        the model has no route or ``change`` returns None."""
        result: Route | None = None

        def publish(snap: Snapshot) -> Snapshot:
            nonlocal result
            route = snap.routes.get(model)
            result = change(route) if route is not None else None
            return snap if result is None or result is route else snap.with_route(model, result)

        self._published.publish(publish)
        return result

    # -- switching (loading thread) -------------------------------------------------------
    def switch(self, request: SwitchRequest) -> dict[str, Any]:
        owner = self._registry.seams.state_owner
        if owner is not None and not request.local:  # the fleet agrees it with its members first
            return owner.switch(request)  # type: ignore[no-any-return]
        model_cfg = self._model_config(request.model)
        route = self._published.current.routes[request.model]
        current, rollout = route.active, route.rollout
        if request.target == current and rollout is None:
            self._check_names(request, model_cfg)
            return summary(request, current, "unchanged")
        self.check(request, current, promoting=rollout is not None and rollout.target == request.target and request.strategy == "immediate")
        # State, state file and audit entry change together, so `hs history` never lags
        # behind what `hs status` shows; requests keep being routed meanwhile.
        with self._changes:
            if request.strategy == "immediate":
                route = self._complete(request.model, request.target)
                outcome = "done"
            else:
                self._health.forget(request.model, request.target)
                route = self._publish_route(request.model, lambda old: old.but(rollout=new_rollout(request, model_cfg, current)))
                outcome = "started"
            rollout_now = route.rollout if route is not None else None
            unsaved = self._persist()
            self._audit.record(request.event, model=request.model, **{"from": current}, to=request.target, strategy=request.strategy,
                               trigger=request.trigger, outcome=outcome, forced=request.force or None,
                               share=rollout_now.share if rollout_now else None, not_persisted=unsaved, client=request.client)
        return {**summary(request, current, outcome), **persisted(unsaved)}

    def _check_names(self, request: SwitchRequest, model_cfg: ModelConfig) -> None:
        if request.target not in model_cfg.versions:
            raise UnknownVersion(f"model {request.model!r} has no version {request.target!r}; versions: {', '.join(model_cfg.versions)}")
        if request.strategy not in STRATEGIES:
            raise RequestError(f"unknown strategy {request.strategy!r}; one of {', '.join(STRATEGIES)}")

    def check(self, request: SwitchRequest, current: str, *, promoting: bool = False) -> None:
        """Whether ``request`` may move the model from ``current``: the names, the task, and
        (loading and warming the target here first) the embedding-space guard unless forced.
        A refusal is audited and raised; nothing is published."""
        model_cfg = self._model_config(request.model)
        self._check_names(request, model_cfg)
        tasks = (model_cfg.versions[current].task if current in model_cfg.versions else None, model_cfg.versions[request.target].task)
        if tasks[0] is not None and tasks[0] != tasks[1]:
            # Not even --force: its callers would get scores for vectors, or the reverse.
            reason = (f"{request.model}@{request.target} is {_a(tasks[1])} version and {current} {_a(tasks[0])} one: "
                      "a switch cannot change what a model computes")
            self._audit.record(request.event, model=request.model, **{"from": current}, to=request.target, strategy=request.strategy, trigger=request.trigger,
                               outcome="failed", reason=reason, client=request.client)
            raise IncompatibleVersions(reason)
        key = (request.model, request.target)
        try:
            self.prepare(request.model, request.target)
            if not promoting and not request.force and request.check_space and current != request.target:
                self._registry.steps.note(key, f"checking it against {current}")
                self._check_compatible(request.model, current, request.target)
        except HotswapError as exc:
            self._audit.record(request.event, model=request.model, **{"from": current}, to=request.target, strategy=request.strategy, trigger=request.trigger, outcome="failed", reason=exc.message, client=request.client)
            raise
        finally:
            self._registry.steps.clear(key)

    def adopt(self, model: str, route: Route, generation: int, audit: dict[str, Any]) -> bool:
        """Publish ``route`` for ``model`` as a fleet committed it at ``generation``, in one
        snapshot with that generation (what replies carry), then persist and audit it. The
        versions it serves were loaded and warmed before (:meth:`prepare`). False when the
        model is gone (a reload removed it)."""
        published = False

        def change(snap: Snapshot) -> Snapshot:
            nonlocal published
            if model not in snap.routes:
                return snap
            published = True
            old = snap.routes[model]
            return snap.with_route(model, route.but(config_active=old.config_active)).with_fleet_generation(generation)

        with self._changes:
            self._published.publish(change)
            if not published:
                return False
            if route.rollout is not None:
                self._health.forget(model, route.rollout.target)
            unsaved = self._persist()
            self._audit.record(audit.pop("event", "switch"), model=model, trigger="fleet", outcome="done", generation=generation, not_persisted=unsaved, **audit)
        return True

    def _model_config(self, model: str) -> ModelConfig:
        snap = self._published.current
        model_cfg = snap.config.models.get(model)
        if model_cfg is None or model not in snap.routes:
            raise UnknownModel(f"unknown model {model!r}; configured: {', '.join(sorted(snap.routes))}")
        return model_cfg

    def prepare(self, model: str, version: str) -> None:
        """Load and warm up a version before any traffic can reach it (once per load)."""
        with self._registry.leased(model, version) as loaded:
            if loaded.warmed:
                return
            self._registry.steps.note((model, version), "warming up")
            import numpy as np

            try:
                vectors = np.asarray(self._exclusive(lambda: loaded.embedder.encode(WARM_UP_TEXTS, normalize=loaded.config.normalize)))
            except Exception as exc:  # whatever the backend raises, the switch is refused
                raise ModelLoadError(f"warm-up of {model}@{version} failed: {type(exc).__name__}: {exc}") from exc
            if vectors.shape[0] != len(WARM_UP_TEXTS) or not np.isfinite(vectors).all():
                raise ModelLoadError(f"warm-up of {model}@{version} returned unusable vectors (shape {vectors.shape})")
            loaded.warmed = True

    def _agreement(self, model: str, source: str, target: str) -> tuple[float, float]:
        """Probe agreement of two versions, on the inference thread, each under a lease."""
        with self._registry.leased(model, source) as a, self._registry.leased(model, target) as b:
            return self._exclusive(lambda: agreement(a, b))  # type: ignore[no-any-return]

    def _check_compatible(self, model: str, current_version: str, target_version: str) -> None:
        with self._registry.leased(model, current_version) as current, self._registry.leased(model, target_version) as target:
            # A feature may refuse the switch, or vouch that what the vectors are compared
            # with moves with the version (its own corpus): then no shared space is needed.
            moves_with_it = [hook.switch_check(current, target) for hook in self._registry.seams.version_hooks]
            if not any(moves_with_it):
                self._check_space(current, target)

    def _check_space(self, current: LoadedVersion, target: LoadedVersion) -> None:
        problems = incompatibilities(describe_space(current), describe_space(target))
        claimed = target.config.compatible_with == current.version or current.config.compatible_with == target.version
        # A claim of compatibility is tested on the probe set instead: a remote endpoint or
        # an export cannot describe its space the way a local model does.
        if problems and not claimed:
            raise IncompatibleVersions(
                f"{target.model}@{target.version} does not share {current.version}'s embedding space "
                f"({'; '.join(problems)}): vectors indexed with one cannot be queried with the other. "
                "Re-index, or switch with --force"
            )
        if claimed:
            threshold = target.config.min_agreement if target.config.compatible_with else current.config.min_agreement
            mean, lowest = self._exclusive(lambda: agreement(current, target))
            if mean < threshold:
                raise IncompatibleVersions(
                    f"{target.model}@{target.version} claims compatibility with {current.version} but their vectors "
                    f"agree only {mean:.4f} on the probe set (min {lowest:.4f}; need {threshold}); switch with --force to override"
                )

    def _complete(self, model: str, target: str, rollout: Rollout | None = None) -> Route | None:
        """Publish ``target`` as the active version (caller holds ``_changes``); with
        ``rollout``, only while that rollout is still the one in progress."""
        old: str | None = None

        def completed(route: Route) -> Route | None:
            nonlocal old
            if rollout is not None and route.rollout is not rollout:
                return None
            old = route.active
            return route.but(active=target, rollout=None, previous=old if old != target else route.previous)

        route = self._publish_route(model, completed)
        model_cfg = self._published.current.config.models.get(model)
        release = model_cfg.rollout.release_previous_after if model_cfg else None
        if route is not None and release is not None and old is not None and old != target:
            with self._lock:
                self._releases.append((time.monotonic() + release, model, old))
        return route

    def rollback(self, model: str, trigger: str = "cli", client: str | None = None) -> dict[str, Any]:
        """Undo the last change: end a rollout in progress, or return to the previous version."""
        owner = self._registry.seams.state_owner
        if owner is not None and trigger != "fleet":
            return owner.rollback(model, trigger=trigger, client=client)  # type: ignore[no-any-return]
        self._model_config(model)
        route = self._published.current.routes[model]
        if route.rollout is not None:
            return self.abort(model, reason="rolled back by request", event="rollback", trigger=trigger, client=client)
        previous = route.previous
        if previous is None:
            raise NothingToRollBack(f"{model} has no previous version to roll back to")
        # Going back to what served before needs no compatibility check: it is the space
        # the callers' data was built in before the switch.
        return self.switch(SwitchRequest(model, previous, trigger=trigger, event="rollback", check_space=False, client=client))

    def abort(self, model: str, reason: str, event: str = "abort", trigger: str = "cli", client: str | None = None) -> dict[str, Any]:
        """End a rollout; all traffic returns to its source version."""
        owner = self._registry.seams.state_owner
        if owner is not None and trigger != "fleet":
            return owner.abort(model, reason=reason, event=event, trigger=trigger, client=client)  # type: ignore[no-any-return]
        self._model_config(model)
        with self._changes:
            route = self._published.current.routes[model]
            rollout = route.rollout
            if rollout is None:
                raise NothingToRollBack(f"{model} has no rollout in progress")
            # Under _changes, nothing else changes this route between the read and the publish.
            self._publish_route(model, lambda old: old.but(rollout=None, active=rollout.source))
            unsaved = self._persist()
            self._audit.record(event, model=model, **{"from": rollout.target}, to=rollout.source, strategy=rollout.strategy, trigger=trigger, outcome="done", reason=reason, not_persisted=unsaved, client=client)
        log.warning("%s: %s rollout of %s ended (%s); all traffic on %s", model, rollout.strategy, rollout.target, reason, rollout.source)
        return {"model": model, "from": rollout.target, "to": rollout.source, "strategy": rollout.strategy, "outcome": "aborted", "reason": reason, **persisted(unsaved)}

    # -- periodic work (socket thread) ----------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < TICK_SECONDS:
            return
        self._last_tick = now
        rollouts = [(name, route.rollout) for name, route in self._published.current.routes.items() if route.rollout is not None]
        owner = self._registry.seams.state_owner
        for name, rollout in rollouts:
            breach = self._health_breach(name, rollout)
            if breach and owner is not None:  # the fleet decides, from every member's reports
                owner.unhealthy(name, rollout.target, breach)
                continue
            if breach:
                try:
                    self.abort(name, reason=breach, event="auto_rollback", trigger="health")
                except NothingToRollBack:
                    pass  # ended by someone else meanwhile
                continue
            with self._lock:
                due = rollout.step_due(now) and name not in self._advancing
                if due:
                    self._advancing.add(name)
            if due:
                self._schedule(lambda name=name: self._advance(name))
        self._release_due(now)

    def _health_breach(self, model: str, rollout: Rollout) -> str | None:
        model_cfg = self._published.current.config.models.get(model)
        if model_cfg is None:  # removed by a reload since the tick read its rollouts
            return None
        limits = model_cfg.health
        snap = self._health.snapshot(model, rollout.target, limits.window_seconds)
        if snap.requests < limits.min_requests:
            return None
        if snap.error_rate > limits.max_error_rate:
            return f"error rate {snap.error_rate:.1%} over {snap.requests} requests > max_error_rate {limits.max_error_rate:.1%}"
        if limits.max_p95_ms is not None and snap.p95_ms is not None and snap.p95_ms > limits.max_p95_ms:
            return f"p95 latency {snap.p95_ms:.1f} ms > max_p95_ms {limits.max_p95_ms:.1f} ms"
        return None

    def _advance(self, model: str) -> None:
        """One gradual step, gated on quality (runs on the loading thread)."""
        try:
            snap = self._published.current
            route = snap.routes.get(model)
            rollout = route.rollout if route else None
            if rollout is None:
                return
            gate = snap.config.models[model].health.min_agreement
            if gate is not None:
                mean, _ = self._agreement(model, rollout.source, rollout.target)
                if mean < gate:
                    self.abort(model, reason=f"agreement {mean:.4f} with {rollout.source} < min_agreement {gate}", event="auto_rollback", trigger="health")
                    return
            with self._changes:
                nxt = rollout.next_share()
                if nxt is None or nxt >= 100:
                    done = self._complete(model, rollout.target, rollout=rollout)
                    event, share = "rollout_complete", 100.0
                else:
                    done = self._publish_route(model, lambda old: old.but(rollout=rollout.next_step(nxt)) if old.rollout is rollout else None)
                    event, share = "rollout_step", nxt
                if done is None:  # ended or changed by someone else meanwhile
                    return
                self._persist()
                self._audit.record(event, model=model, **{"from": rollout.source}, to=rollout.target, strategy="gradual", trigger="schedule", outcome="done", share=share)
        except HotswapError as exc:
            try:
                self.abort(model, reason=f"step failed: {exc.message}", event="auto_rollback", trigger="health")
            except NothingToRollBack:
                pass
        finally:
            with self._lock:
                self._advancing.discard(model)

    def _release_due(self, now: float) -> None:
        with self._lock:
            due = [item for item in self._releases if item[0] <= now]
            if not due:
                return
            self._releases = [item for item in self._releases if item[0] > now]
        for _, model, version in due:
            route = self._published.current.routes.get(model)
            serving = route.serving() if route else set()
            if version not in serving:
                self._registry.unload(model, version, "release")

    # -- reporting ------------------------------------------------------------------------
    def describe(self, model: str, snapshot: Snapshot | None = None) -> dict[str, Any] | None:
        """The model's routing in ``snapshot`` (the one in force if None); None when it has none."""
        snap = snapshot or self._published.current
        route = snap.routes.get(model)
        if route is None:
            return None
        rollout = route.rollout
        data: dict[str, Any] = {"active": route.active, "previous": route.previous, "rollout": None}
        model_cfg = snap.config.models.get(model)
        if rollout is not None and model_cfg is not None:
            window = model_cfg.health.window_seconds
            data["rollout"] = {
                **rollout.to_dict(),
                "health": {
                    rollout.source: self._health.snapshot(model, rollout.source, window).as_dict(),
                    rollout.target: self._health.snapshot(model, rollout.target, window).as_dict(),
                },
            }
        return data

    def models(self, snapshot: Snapshot | None = None) -> list[str]:
        return sorted((snapshot or self._published.current).routes)


def _a(task: str) -> str:
    return f"an {task}" if task[0] in "aeiou" else f"a {task}"
