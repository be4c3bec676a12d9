"""What the op handlers work with, built once by the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hotswapd.benchmarking.periodic import PeriodicBench
from hotswapd.daemon.admission import Admission
from hotswapd.daemon.audit import AuditLog
from hotswapd.daemon.health import HealthBook
from hotswapd.daemon.inference import Inference
from hotswapd.daemon.metrics import Metrics
from hotswapd.daemon.registry import Registry
from hotswapd.daemon.switching import Switchboard
from hotswapd.daemon.workers import Workers


@dataclass
class Services:
    """The daemon's parts, as the handlers see them."""

    registry: Registry
    switchboard: Switchboard
    health: HealthBook
    metrics: Metrics
    audit: AuditLog
    reload: Callable[[str], dict[str, Any]]
    inference: Inference
    admission: Admission
    workers: Workers
    periodic: PeriodicBench | None = None  # `[bench]` rounds, for `hs status`
