"""What the op handlers work with, built once by the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hotswapd.core.admission import Admission
from hotswapd.core.audit import AuditLog
from hotswapd.core.health import HealthBook
from hotswapd.pipeline.inference import Inference
from hotswapd.core.metrics import Metrics
from hotswapd.core.registry import Registry
from hotswapd.core.switching import Switchboard
from hotswapd.core.workers import Workers


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
