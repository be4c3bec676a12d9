"""The calibration hook: when a local embedding version loads (before it serves), encode a
fixed calibration sample once and keep the per-dimension minimum and maximum of its
normalised vectors; int8/uint8 output is cut into steps between them (hotswapd.wire.compact).

Skipped for what has no vectors of its own to calibrate: rerank versions, ensembles
(composites), and remote endpoints (a paid call per load). Fixed texts, so the same weights
give the same ranges, and the ranges' fingerprint names them in every int8/uint8 reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hotswapd.core.seams import EventSink
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.config.schema import VersionConfig
from hotswapd.text.probe_texts import CALIBRATION_MARK, calibration_texts
from hotswapd.wire.compact import calibration_ranges, ranges_fingerprint

log = logging.getLogger(__name__)
NAME = "calibration"
CALIBRATION_SECONDS = 120.0  # a model this slow on ~30 texts serves floats until it is reloaded
REMOTE_BACKENDS = frozenset({"openai", "sagemaker"})


@dataclass(frozen=True)
class Calibration:
    ranges: Any  # 2 x dim float32
    fingerprint: str
    texts: int
    seconds: float

    def close(self) -> None:
        """Nothing to release: a small array."""


class CalibrationHook:
    """``run_on_model_thread(work)`` runs ``work`` on the inference thread and returns a
    future: the calibration encode never runs beside a batch (hotswapd.pipeline.inference)."""

    name = NAME

    def __init__(self, run_on_model_thread: Callable[[Callable[[], Any]], Future[Any]]) -> None:
        self._run = run_on_model_thread

    def expected_bytes(self, spec: VersionConfig) -> int:
        return 0

    def on_load(self, loaded: LoadedVersion, on_event: EventSink) -> None:
        spec = loaded.config
        if spec.task != "embed" or spec.backend in REMOTE_BACKENDS or loaded.caps.composite is not None:
            return
        started = time.perf_counter()
        try:
            import numpy as np

            # Marked: not a request, so a test double never counts it as one.
            texts = [f"{CALIBRATION_MARK} {text}" for text in calibration_texts()]
            vectors = np.asarray(self._run(lambda: loaded.embedder.encode(texts, normalize=True)).result(CALIBRATION_SECONDS), dtype=np.float32)
            if vectors.ndim != 2 or not np.isfinite(vectors).all():
                log.warning("%s@%s: calibration vectors unusable (shape %s); int8/uint8 output is refused", loaded.model, loaded.version, vectors.shape)
                return
            ranges = calibration_ranges(vectors)
        except Exception:  # noqa: BLE001 -- a feature's failure is its own: the version serves floats
            log.exception("%s@%s: calibration failed; int8/uint8 output is refused", loaded.model, loaded.version)
            return
        loaded.attachments[NAME] = Calibration(ranges, ranges_fingerprint(ranges), len(texts), time.perf_counter() - started)

    def switch_check(self, current: LoadedVersion, target: LoadedVersion) -> bool:
        return False  # vouches for nothing: the embedding-space guard decides

    def describe(self, loaded: LoadedVersion) -> dict[str, Any] | None:
        found = loaded.attachments.get(NAME)
        return {"fingerprint": found.fingerprint, "texts": found.texts, "seconds": round(found.seconds, 3)} if found else None

    def refresh(self, loaded: LoadedVersion, on_event: EventSink) -> str | None:
        return None
