"""A config being applied: what the registry loaded for it before it was published, and
what publishing it did (the reply of a reload says it). Plain data; the registry fills it."""

from __future__ import annotations

from dataclasses import dataclass, field

from hotswapd.config.schema import Config, VersionConfig
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.core.snapshot import VersionKey


@dataclass
class Reconfiguration:
    """A config being applied: fresh copies of loaded versions whose computing options
    changed (loaded while the old ones serve), then what publishing it did."""

    config: Config
    fresh: dict[VersionKey, LoadedVersion] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # NAME@VER -> why its fresh copy did not load
    removed: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    retire: list[tuple[LoadedVersion, str]] = field(default_factory=list)


def version_spec(config: Config, model: str, version: str) -> VersionConfig | None:
    model_cfg = config.models.get(model)
    return model_cfg.versions.get(version) if model_cfg else None
