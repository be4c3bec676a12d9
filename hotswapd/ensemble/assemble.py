"""Loading an ensemble version: lease each member from the registry (loading it if needed)
and combine them. Its fingerprint is derived from its members' fingerprints, so a member
reloaded with other weights makes a new ensemble fingerprint (and new cache keys)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hotswapd.ensemble.embedder import EnsembleEmbedder, Part
from hotswapd.errors import HotswapError, ModelLoadError

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig
    from hotswapd.pipeline.loaded import LoadedVersion


def assemble(
    model: str, version: str, spec: VersionConfig, lease: Callable[[str, str], LoadedVersion], release: Callable[[LoadedVersion], None]
) -> LoadedVersion:
    from hotswapd.pipeline.loaded import LoadedVersion

    started = time.perf_counter()
    options = spec.options
    parts: list[Part] = []
    try:
        for member in options.members:  # type: ignore[attr-defined]
            try:
                parts.append(Part(lease(member.model, member.version), member.weight))
            except HotswapError as exc:
                raise ModelLoadError(f"ensemble {model}@{version}: member {member.spec}: {exc.message}") from None
        embedder = EnsembleEmbedder(parts, options.combine, release)  # type: ignore[attr-defined]
    except BaseException:
        for part in parts:
            release(part.loaded)
        raise
    digest = hashlib.sha256(
        "|".join([embedder.combine, *(f"{part.spec}={part.loaded.fingerprint}x{part.weight!r}" for part in parts)]).encode()
    ).hexdigest()[:16]
    seconds = time.perf_counter() - started
    return LoadedVersion(model, version, spec, embedder, f"ensemble:{digest}", time.time(), seconds, 0, members=tuple(part.loaded for part in parts))
