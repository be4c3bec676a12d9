"""What answers behind a remote endpoint, as a digest that changes when the model does.

A remote version has no local weights to fingerprint, and the model behind an endpoint
can be replaced under the same name. Its identity is a digest of where it is and of its
vectors for the probe set, taken at load and again every ``recheck_seconds`` on a thread
of its own (a version answered from the cache alone must notice too). It is part of the
version's fingerprint, so the embedding cache never serves the old model's vectors.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hotswapd.errors import InferenceError
from hotswapd.text.probe_texts import PROBE_TEXTS

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
# The most a remote's answer may be, read as it arrives: a 256-text batch of 4096-dim
# vectors as JSON floats is ~25 MB; anything near this is a broken or hostile remote.
MAX_ANSWER_BYTES = 256 * 2**20


class RemoteIdentity:
    def __init__(self, where: str, probe: Callable[[list[str]], np.ndarray], recheck_seconds: float) -> None:
        self._where = where
        self._probe = probe
        self._recheck_seconds = recheck_seconds
        self._closed = threading.Event()
        self.value = ""
        self.dimension = int(self.check().shape[1])

    def start(self) -> None:
        threading.Thread(target=self._every, name="hotswapd-remote-recheck", daemon=True).start()

    def check(self) -> np.ndarray:
        """Probe now; a different answer than last time is a different model."""
        import numpy as np

        vectors = self._probe(list(PROBE_TEXTS))
        digest = hashlib.sha256(self._where.encode())
        digest.update(np.round(np.asarray(vectors, dtype=np.float64), 4).tobytes())  # float noise is no upgrade
        value = digest.hexdigest()[:16]
        if self.value and value != self.value:
            log.warning("%s answers differently than before (identity %s -> %s): the remote model changed", self._where, self.value, value)
        self.value = value
        return vectors

    def close(self) -> None:
        self._closed.set()

    def _every(self) -> None:
        while not self._closed.wait(self._recheck_seconds):
            try:
                self.check()
            except InferenceError as exc:  # unreachable for now: requests will say so themselves
                log.warning("re-checking %s failed: %s", self._where, exc.message)
