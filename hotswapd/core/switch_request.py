"""A switch as asked for, and the plain data made from it: the rollout it starts and the
summary the caller gets back. No locks, no I/O: :mod:`hotswapd.core.switching` acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hotswapd.config.schema import ModelConfig
from hotswapd.core.rollout import Rollout


@dataclass(frozen=True)
class SwitchRequest:
    model: str
    target: str
    strategy: str = "immediate"
    share: float | None = None
    sticky: bool | None = None
    steps: list[float] | None = None
    step_seconds: float | None = None
    step_requests: int | None = None
    force: bool = False
    trigger: str = "cli"
    event: str = "switch"
    check_space: bool = True
    client: str | None = None  # the CURVE key's name of a TCP client, for the audit log
    # Applied on this daemon only, even when a state owner (a fleet) takes the others.
    local: bool = False


def new_rollout(request: SwitchRequest, model_cfg: ModelConfig, current: str) -> Rollout:
    defaults = model_cfg.rollout
    steps = request.steps or defaults.steps
    share = steps[0] if request.strategy == "gradual" else (request.share if request.share is not None else defaults.share)
    return Rollout(
        source=current,
        target=request.target,
        strategy=request.strategy,
        share=float(share),
        sticky=defaults.sticky if request.sticky is None else request.sticky,
        steps=tuple(float(s) for s in steps),
        step_seconds=request.step_seconds if request.step_seconds is not None else (None if request.step_requests else defaults.step_seconds),
        step_requests=request.step_requests if request.step_requests is not None else defaults.step_requests,
        forced=request.force,
        trigger=request.trigger,
    )


def summary(request: SwitchRequest, current: str, outcome: str) -> dict[str, Any]:
    return {"model": request.model, "from": current, "to": request.target, "strategy": request.strategy, "outcome": outcome, "forced": request.force}


def persisted(unsaved: str | None) -> dict[str, Any]:
    """What a reply says of persistence: ``persisted``, and why not when it was not."""
    return {"persisted": True} if unsaved is None else {"persisted": False, "not_persisted": unsaved}
