"""The daemon's worker threads, by what they wait on, so that nothing waits behind the wrong thing.

    control   one thread: switches, rollbacks, preloads, evictions, reloads (serialised, in order)
    loader    a few threads: requests that picked a version that is not loaded yet
    tune      one thread: `hs tune` (measures every path of a model in a subprocess: minutes)
    bench     one thread: a periodic benchmark round ([bench]), which waits for idle moments
    io        one thread: files and slow housekeeping (history, the sqlite cache, closing
              retired versions with gc + malloc_trim)

The socket thread never runs any of this itself. A job's exception is logged here and
never ends a worker (a job that owes a reply catches its own errors first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

log = logging.getLogger(__name__)

Pool = Literal["control", "loader", "io", "tokens", "search", "tune", "bench"]
# tokens: counting texts' tokens for a request that asks (the HTTP endpoint's usage).
# search: scoring queries against a corpus (one: BLAS already uses every core).
SIZES: dict[str, int] = {"control": 1, "loader": 4, "io": 1, "tokens": 1, "search": 1, "tune": 1, "bench": 1}


class Workers:
    def __init__(self) -> None:
        self._pools = {name: ThreadPoolExecutor(size, thread_name_prefix=f"hotswapd-{name}") for name, size in SIZES.items()}
        self._closed = False

    def submit(self, pool: Pool, work: Callable[[], Any]) -> Future[Any] | None:
        """Run ``work`` on ``pool``; after :meth:`close`, run it inline (shutdown paths)."""
        if self._closed:
            _guarded(work)
            return None
        try:
            return self._pools[pool].submit(_guarded, work)
        except RuntimeError:  # shut down between the check and the submit
            _guarded(work)
            return None

    def executor(self, pool: Pool) -> ThreadPoolExecutor:
        return self._pools[pool]

    def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def _guarded(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except Exception:  # noqa: BLE001 -- a worker outlives any job
        log.exception("background job failed")
        return None
