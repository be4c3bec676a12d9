"""The calibration hook: a local embedding version, once loaded, can measure its int8/uint8
ranges: encode a fixed calibration sample once (when a request first asks for int8 or
uint8) and keep the per-dimension minimum and maximum of its normalised vectors; the
output is cut into steps between them (hotswapd.wire.compact).

Skipped for what has no vectors of its own to calibrate: rerank versions, ensembles
(composites), and remote endpoints (a paid call per load). Fixed texts, so the same weights
give the same ranges, and the ranges' fingerprint names them in every int8/uint8 reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from hotswapd.core.seams import EventSink
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.config.schema import UNCALIBRATED_BACKENDS, VersionConfig
from hotswapd.text.probe_texts import CALIBRATION_MARK, calibration_texts
from hotswapd.wire.compact import calibration_ranges, ranges_fingerprint

log = logging.getLogger(__name__)
NAME = "calibration"


class Calibration:
    """A version's ranges, measured on the inference thread the first time a request asks
    for them (:meth:`request`, called before that request's batch is queued, so the batch
    runs after the measurement). Not at the load: most versions are never asked for int8,
    and a measurement queued at every load would keep the inference thread busy when the
    next load's cost probe wants it idle. ``ranges`` is None until measured, or if the
    measurement failed (``problem``); ``pending`` while it is queued or running."""

    def __init__(self, texts: int, schedule: Callable[[], None]) -> None:
        self.texts = texts
        self.pending = False
        self._schedule = schedule
        self._asked = False
        self._lock = threading.Lock()
        self.ranges: Any = None
        self.fingerprint: str | None = None
        self.seconds = 0.0
        self.problem: str | None = None

    def request(self) -> None:
        """Queue the measurement, once."""
        with self._lock:
            if self._asked:
                return
            self._asked = self.pending = True
        self._schedule()

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
        if spec.task != "embed" or spec.backend in UNCALIBRATED_BACKENDS or loaded.caps.composite is not None:
            return
        texts = [f"{CALIBRATION_MARK} {text}" for text in calibration_texts()]  # marked: not a request (a test double tells)

        def measure() -> None:
            # On the inference thread: never beside a batch. Never waited for by the request
            # that asked: its own batch queues behind this.
            started = time.perf_counter()
            try:
                import numpy as np

                vectors = np.asarray(loaded.embedder.encode(texts, normalize=True), dtype=np.float32)
                if vectors.ndim != 2 or not np.isfinite(vectors).all():
                    raise ValueError(f"unusable calibration vectors (shape {vectors.shape})")
                ranges = calibration_ranges(vectors)
            except Exception as exc:  # noqa: BLE001 -- a feature's failure is its own: the version serves floats
                calibration.problem = f"{type(exc).__name__}: {exc}"
                calibration.pending = False
                log.warning("%s@%s: calibration failed (%s); int8/uint8 output is refused", loaded.model, loaded.version, calibration.problem)
                return
            calibration.fingerprint, calibration.seconds = ranges_fingerprint(ranges), time.perf_counter() - started
            calibration.ranges = ranges  # after the fingerprint: a reader that sees ranges sees it too
            calibration.pending = False

        calibration = Calibration(len(texts), lambda: self._run(measure))
        loaded.attachments[NAME] = calibration

    def switch_check(self, current: LoadedVersion, target: LoadedVersion) -> bool:
        return False  # vouches for nothing: the embedding-space guard decides

    def describe(self, loaded: LoadedVersion) -> dict[str, Any] | None:
        found = loaded.attachments.get(NAME)
        if found is None:
            return None
        return {"fingerprint": found.fingerprint, "texts": found.texts, "seconds": round(found.seconds, 3), "problem": found.problem}

    def refresh(self, loaded: LoadedVersion, on_event: EventSink) -> str | None:
        return None
