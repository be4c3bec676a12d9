"""Routing state of one model: its active version, and a rollout in progress if any.

Pure data and arithmetic, no I/O: :mod:`hotswapd.core.switching` drives it. Both are
frozen: they live in the published snapshot (:mod:`hotswapd.core.snapshot`), and a change
is a new route published whole. The one thing that moves with every request, how many a
gradual step's target has served, is a counter beside the data, not part of it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotswapd.config.schema import Config, ModelConfig

log = logging.getLogger(__name__)
STRATEGIES = ("immediate", "canary", "split", "gradual")


def sticky_bucket(model: str, key: str) -> float:
    """A stable position in [0, 100) for a key: the same key always lands on the same side,
    and as a gradual rollout's share grows, keys only ever move to the new version."""
    digest = hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


class StepCounter:
    """Requests a gradual step's target has served since the step began. ``next`` on an
    ``itertools.count`` is atomic under the GIL: picks on the socket thread count without a lock."""

    def __init__(self, start: int = 0) -> None:
        self._count = itertools.count(start + 1)
        self._last = start

    def add(self) -> None:
        self._last = next(self._count)

    @property
    def value(self) -> int:
        return self._last


@dataclass(frozen=True)
class Rollout:
    source: str
    target: str
    strategy: str  # canary | split | gradual
    share: float  # percent of requests sent to target
    sticky: bool = False
    steps: tuple[float, ...] = ()
    step_seconds: float | None = None
    step_requests: int | None = None
    forced: bool = False
    trigger: str = "cli"
    started_at: float = field(default_factory=time.time)
    step_started: float = field(default_factory=time.monotonic)
    served: StepCounter = field(default_factory=StepCounter, compare=False, repr=False)

    @property
    def step_served(self) -> int:
        """Requests the target served since the current step began."""
        return self.served.value

    def choose(self, model: str, key: str | None) -> str:
        position = sticky_bucket(model, key) if self.sticky and key is not None else random.random() * 100
        if position < self.share:
            self.served.add()
            return self.target
        return self.source

    def next_step(self, share: float) -> Rollout:
        """The same rollout at its next gradual share, its step clock and count started anew."""
        return replace(self, share=share, step_started=time.monotonic(), served=StepCounter())

    def next_share(self) -> float | None:
        """The next gradual step above the current share, or None when there is none."""
        return next((step for step in self.steps if step > self.share), None)

    def step_due(self, now: float) -> bool:
        if self.strategy != "gradual":
            return False
        by_time = self.step_seconds is not None and now - self.step_started >= self.step_seconds
        by_requests = self.step_requests is not None and self.step_served >= self.step_requests
        return by_time or by_requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "strategy": self.strategy,
            "share": self.share,
            "sticky": self.sticky,
            "steps": list(self.steps),
            "step_seconds": self.step_seconds,
            "step_requests": self.step_requests,
            "forced": self.forced,
            "trigger": self.trigger,
            "started_at": self.started_at,
            "step_served": self.step_served,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("step_started", "served")}
        known["steps"] = tuple(known.get("steps") or ())
        served = data.get("step_served")
        return cls(**known, served=StepCounter(served if isinstance(served, int) and served > 0 else 0))


@dataclass(frozen=True)
class Route:
    active: str
    previous: str | None = None
    rollout: Rollout | None = None
    # The file's `active` when it was last applied: a restart keeps a command's switch
    # only while the file still says what it said then.
    config_active: str = ""

    def choose(self, model: str, key: str | None) -> str:
        rollout = self.rollout
        return rollout.choose(model, key) if rollout is not None else self.active

    def but(self, **changes: Any) -> Route:
        """This route with some fields changed (a new object: routes are published whole)."""
        return replace(self, **changes)

    def serving(self) -> set[str]:
        """Versions that may receive traffic now."""
        if self.rollout is None:
            return {self.active}
        return {self.rollout.source, self.rollout.target}

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "previous": self.previous,
            "config_active": self.config_active,
            "rollout": self.rollout.to_dict() if self.rollout else None,
        }


def routes_for(config: Config, routes: Mapping[str, Route]) -> tuple[dict[str, Route], list[str]]:
    """Routes brought in line with ``config`` (pure): models it removed lose theirs, new ones
    start on their `active`, versions it removed leave the routes that named them. Also
    returns the models whose file `active` changed from what was last applied."""
    result: dict[str, Route] = {}
    changed: list[str] = []
    for name, model in config.models.items():
        route = routes.get(name)
        if route is None:
            result[name] = Route(active=model.active, config_active=model.active)
            continue
        route = _without_vanished(route, model)
        if model.active != route.config_active:
            if model.active != route.active or route.rollout is not None:
                changed.append(name)
            route = route.but(config_active=model.active)
        result[name] = route
    return result, changed


def _without_vanished(route: Route, model: ModelConfig) -> Route:
    if route.active not in model.versions:
        route = route.but(active=model.active, rollout=None)
    if route.rollout and not {route.rollout.source, route.rollout.target} <= set(model.versions):
        route = route.but(rollout=None)
    if route.previous not in model.versions:
        route = route.but(previous=None)
    return route


def restored(saved: dict[str, Any], config: Config, routes: Mapping[str, Route]) -> dict[str, Route]:
    """``routes`` with the state an earlier run persisted, where the file has not changed since."""
    result = dict(routes)
    for name, data in (saved.get("models") or {}).items():
        model, route = config.models.get(name), result.get(name)
        if model is None or route is None or data.get("config_active") != model.active:
            continue
        if data.get("active") in model.versions:
            route = route.but(active=data["active"])
        if data.get("previous") in model.versions:
            route = route.but(previous=data["previous"])
        if data.get("rollout"):
            rollout = Rollout.from_dict(data["rollout"])
            if {rollout.source, rollout.target} <= set(model.versions):
                route = route.but(rollout=rollout)
        result[name] = route
        log.info("restored %s: active %s%s", name, route.active, f", rollout to {route.rollout.target}" if route.rollout else "")
    return result

