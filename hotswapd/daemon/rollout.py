"""Routing state of one model: its active version, and a rollout in progress if any.

Pure data and arithmetic, no I/O: :mod:`hotswapd.daemon.switching` drives it.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

STRATEGIES = ("immediate", "canary", "split", "gradual")


def sticky_bucket(model: str, key: str) -> float:
    """A stable position in [0, 100) for a key: the same key always lands on the same side,
    and as a gradual rollout's share grows, keys only ever move to the new version."""
    digest = hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


@dataclass
class Rollout:
    source: str
    target: str
    strategy: str  # canary | split | gradual
    share: float  # percent of requests sent to target
    sticky: bool = False
    steps: list[float] = field(default_factory=list)
    step_seconds: float | None = None
    step_requests: int | None = None
    forced: bool = False
    trigger: str = "cli"
    started_at: float = field(default_factory=time.time)
    step_started: float = field(default_factory=time.monotonic)
    step_served: int = 0  # requests the target served since the current step began

    def choose(self, model: str, key: str | None) -> str:
        position = sticky_bucket(model, key) if self.sticky and key is not None else random.random() * 100
        if position < self.share:
            self.step_served += 1
            return self.target
        return self.source

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
        data = asdict(self)
        data.pop("step_started")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "step_started"}
        return cls(**known)


@dataclass
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
