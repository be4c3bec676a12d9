"""Backend ``auto``: serve a model the fastest way this machine runs it at the accuracy asked for.

On first load it measures the candidate paths (torch fp32/bf16, ONNX fp32/int8, OpenVINO
fp32/bf16/int8, whatever this machine can run: :mod:`hotswapd.tuning`), drops those whose
vectors fall under ``min_cosine`` against fp32 sentence-transformers (a rerank version:
whose document order falls under ``min_spearman`` against the torch cross-encoder), and
loads the fastest through its own backend. The choice is cached, keyed by the CPU (model and flags),
the library versions, the weights' fingerprint and the settings, so the next start loads
the chosen path at once, without torch when the path does not need it. ``hs tune`` shows
the table and measures again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hotswapd.tuning.run_paths import PATHS, backend_and_options, gate_options

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig

log = logging.getLogger(__name__)


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The paths to compare (default: all of them; the ones this machine cannot run are skipped).
    paths: list[str] | None = None
    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)
    # A rerank version's gate (task = "rerank"): Spearman of each check query's document
    # order against the torch cross-encoder, its worst query at least this.
    min_spearman: float = Field(default=0.95, ge=-1.0, le=1.0)

    @field_validator("paths")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(PATHS))
            if unknown or not value:
                raise ValueError(f"unknown path(s) {', '.join(unknown) or '(none given)'}; paths: {', '.join(PATHS)}")
            if len(set(value)) != len(value):
                raise ValueError("a path is named twice")
        return value


def chosen_config(version: VersionConfig, path: Path, backend: str, options: dict[str, Any]) -> VersionConfig:
    """The version as the chosen path's backend loads it: the same common settings, that
    backend and its precision options, the auto version's accuracy gate."""
    from hotswapd.config.schema import VersionConfig
    from hotswapd.tuning.run import settings

    common = {name: getattr(version, name) for name in VersionConfig.model_fields}
    _, gate = settings(version)
    gated = gate_options(version.task, backend, gate)
    return VersionConfig.model_validate({**common, "backend": backend, "source": str(path), **gated, **options})


def load(path: Path, version: VersionConfig) -> Any:
    from hotswapd.backends import get_loader, import_libraries
    from hotswapd.tuning.run import tuned

    record = tuned(path, version)
    # The path's name decides what runs, never the backend and options written in the
    # cache file (it is a file on disk; what it says is only believed about speed).
    backend, options = backend_and_options(record.chosen, path, version.task)
    import_libraries(backend)
    embedder = get_loader(backend)(path, chosen_config(version, path, backend, options))
    # Read by `hs models` (which path, why) and by the fingerprint (the same config computes
    # int8 vectors on one machine and bf16 on another).
    embedder.tuned = {"path": record.chosen, "reason": record.reason, "measured_at": record.measured_at, "cpu": record.cpu}
    embedder.tuned_path = record.chosen
    log.info("auto: %s runs as %s (%s)", path, record.chosen, record.reason)
    return embedder
