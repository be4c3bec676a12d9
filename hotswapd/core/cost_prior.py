"""What a version's work costs, measured when it loads: admission's prior.

Admission prices queued work from the batches it has seen run. A daemon that has just
started has seen none, and priced every wait at 0 s: a burst of 32 clients x 500 one-KB
texts was admitted whole and timed out together at 20 s (issue 28). So each version, as
it loads, runs a short probe on the inference thread (never beside a batch): one warm-up
call (first-call allocations, graph set-up), then a batch of short sentences and a batch
of passages of about a kilobyte, each timed and reported to admission as batches of that
version. Short and long batches together let the cost model tell per-text from per-byte
cost (the best of two runs of each). The probe costs tens of milliseconds on a small
model, once per load, and runs only
when the inference thread is idle: a load never waits behind the queue for it (a reload
during a long batch would), and under traffic the version's first batches price it.

A remote backend (its calls cost money and say little of this machine) and an ensemble
(priced by its members' batches) are not probed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hotswapd.text.decode import utf8_size

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig
    from hotswapd.core.seams import EventSink
    from hotswapd.pipeline.loaded import LoadedVersion

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_MARK = "hotswap cost probe"  # every probe text starts with it (a test double tells probes apart by it)
SHORT = [f"{PROBE_MARK}: a short sentence, number {i}." for i in range(16)]
_PASSAGE = (
    " The daemon keeps sentence-embedding models loaded and answers requests from many clients;"
    " this passage is about as long as a paragraph of a news article, so its cost per byte is"
    " what a document of that size costs to encode."
)
LONG = [f"{PROBE_MARK} {i}:" + _PASSAGE * 4 for i in range(4)]  # about 1 KB each
REPEATS = 2  # each batch's best time: one run beside a hiccup (another process) would price the version at it
PROBE_SECONDS = 60.0  # a probe that waits longer for the inference thread gives up (the daemon is stopping)

IfIdle = Callable[[Callable[[], Any], float], tuple[bool, Any]]  # run on an idle inference thread: (ran, result)
Observe = Callable[..., None]  # (texts, bytes, seconds, key=(model, version), prior=True)


class CostPrior:
    """The probe as a version hook (hotswapd.core.seams)."""

    name = "cost"

    def __init__(self, if_idle: IfIdle, observe: Observe, forget: Callable[[tuple[str, str]], None]) -> None:
        self._if_idle = if_idle
        self._observe = observe
        self._forget = forget
        self._measured: dict[tuple[str, str], dict[str, float]] = {}

    def expected_bytes(self, spec: VersionConfig) -> int:
        return 0

    def on_load(self, loaded: LoadedVersion, on_event: EventSink) -> None:
        if loaded.caps.composite is not None or loaded.caps.identity is not None:
            return
        key = (loaded.model, loaded.version)
        self._forget(key)  # a reload may have changed what the version runs on
        normalize = loaded.config.normalize

        def probe() -> list[tuple[int, int, float]]:
            loaded.embedder.encode(SHORT[:2], normalize=normalize)  # the first call pays for set-up
            loaded.timed = True
            batches = []
            for texts in (SHORT, LONG):
                seconds = []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    loaded.embedder.encode(texts, normalize=normalize)
                    seconds.append(time.perf_counter() - started)
                batches.append((len(texts), sum(utf8_size(text) for text in texts), min(seconds)))
            return batches

        try:
            ran, batches = self._if_idle(probe, PROBE_SECONDS)
        except Exception as exc:  # noqa: BLE001 -- no prior; the first batches price the version instead
            log.warning("%s@%s: the cost probe failed (%s: %s); its first batches will price it", loaded.model, loaded.version, type(exc).__name__, exc)
            return
        if not ran:
            log.info("%s@%s: not probed for its cost (requests are running); its first batches will price it", loaded.model, loaded.version)
            return
        for texts, nbytes, seconds in batches:
            self._observe(texts, nbytes, seconds, key=key, prior=True)
        (short_n, _, short_s), (long_n, long_bytes, long_s) = batches
        self._measured[key] = {
            "short_ms_per_text": round(short_s / short_n * 1000, 3),
            "kib_ms": round(long_s / (long_bytes / 1024) * 1000, 3),
        }

    def switch_check(self, current: LoadedVersion, target: LoadedVersion) -> bool:
        return False

    def describe(self, loaded: LoadedVersion) -> dict[str, Any] | None:
        return self._measured.get((loaded.model, loaded.version))

    def refresh(self, loaded: LoadedVersion, on_event: EventSink) -> str | None:
        return None
