"""The memory budget: before a load, make room by evicting idle, unpinned versions.

A version's size is known three ways: measured at load (RSS delta, shown by ``hs models``),
the config's ``ram_gb`` hint, or, before its first load, the size of its files. The budget
is ``memory.max_gb`` for the loaded versions together, and/or ``memory.min_free_gb`` of
system memory kept available. Versions with requests in flight and pinned versions are
never chosen; among the rest ``policy`` picks the least recently used (``lru``) or the
largest first (the seed's ``largest``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    from hotswapd.config.schema import MemoryConfig, VersionConfig

GB = 1024**3
MiB = 1024**2


class Holding(Protocol):
    """Anything that holds memory the budget counts: a loaded or retiring version, a load
    in progress."""

    memory_bytes: int


class Evictable(Holding, Protocol):
    """A loaded version, as the budget sees it (kept apart from the registry's class so
    the budget does not import the registry)."""

    model: str
    version: str
    last_used: float

    @property
    def config(self) -> VersionConfig: ...


@dataclass(frozen=True)
class Reservation:
    """Memory promised to a load in progress, counted until the load has measured itself."""

    name: str
    memory_bytes: int


def files_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def estimate(spec: VersionConfig, on_disk: int, measured_before: int | None) -> int:
    """Bytes a load is expected to take: the hint, else the last measurement, else the files."""
    if spec.ram_gb is not None:
        return int(spec.ram_gb * GB)
    return measured_before if measured_before is not None else on_disk


def bytes_over(config: MemoryConfig, loaded: Sequence[Holding], need: int) -> int:
    """How many bytes must be freed before loading ``need`` more; 0 or less means it fits."""
    over = 0
    if config.max_gb is not None:
        over = sum(item.memory_bytes for item in loaded) + need - int(config.max_gb * GB)
    if config.min_free_gb is not None:
        available = psutil.virtual_memory().available
        over = max(over, int(config.min_free_gb * GB) - (available - need))
    return over


def victims(config: MemoryConfig, loaded: Sequence[Evictable], over: int, in_use: set[int], loading: str, draining: Sequence[Evictable] = ()) -> list[Evictable]:
    """The versions to evict to free ``over`` bytes, or ModelLoadError naming what holds memory."""
    candidates = [item for item in loaded if not item.config.pinned and id(item) not in in_use]
    if config.policy == "largest":
        candidates.sort(key=lambda item: item.memory_bytes, reverse=True)
    else:
        candidates.sort(key=lambda item: item.last_used)
    chosen, freed = [], 0
    for item in candidates:
        if freed >= over:
            break
        chosen.append(item)
        freed += item.memory_bytes
    if freed < over:
        held = ", ".join(
            f"{item.model}@{item.version} {item.memory_bytes / MiB:.0f} MiB"
            + (" (pinned)" if item.config.pinned else " (in use)" if id(item) in in_use else "")
            for item in sorted(loaded, key=lambda item: item.memory_bytes, reverse=True)
        )
        held += "".join(f", {item.model}@{item.version} {item.memory_bytes / MiB:.0f} MiB (draining)" for item in draining)
        limit = f"memory.max_gb = {config.max_gb}" if config.max_gb is not None else f"memory.min_free_gb = {config.min_free_gb}"
        raise ModelLoadError(
            f"{loading} does not fit within {limit}: {over / MiB:.0f} MiB more would be needed "
            f"and only {freed / MiB:.0f} MiB can be evicted; loaded: {held or 'nothing'}"
        )
    return chosen


M_ARENA_MAX = -8  # glibc mallopt parameter
ARENAS = 2


def few_heaps() -> None:
    """Keep glibc to a couple of heaps (arenas) instead of one per thread (up to 8 per
    core). With one heap per thread, a burst of large request texts spreads freed memory
    over many heaps that are never given back: 64 x 1 MB requests peaked at +194 MiB RSS
    with per-thread heaps and +119 MiB with two (bench_overload). The daemon's threads
    mostly wait; the few that allocate do not contend much. Call before threads start."""
    libc = _libc()
    if libc is not None:
        try:
            libc.mallopt(M_ARENA_MAX, ARENAS)
        except AttributeError:
            pass  # not glibc


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, found once (``find_library`` runs ldconfig: milliseconds each time)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim() -> None:
    """Ask glibc to return the free parts of its heap to the system (no collection)."""
    libc = _libc()
    if libc is not None:
        try:
            libc.malloc_trim(0)
        except AttributeError:
            pass  # not glibc: nothing to trim


COLLECT_FROM_BYTES = 32 * MiB  # a smaller version frees too little to pay for a full collection


def give_back(freed_bytes: int) -> None:
    """After an unload: collect the model's reference cycles (torch modules have them) and
    ask glibc to return freed heap to the system, so RSS falls instead of ratcheting up
    with every load and unload. A full collection holds the GIL for 5-50 ms (it walks every
    object of the process), so it is paid only for a version that held at least
    ``COLLECT_FROM_BYTES``; a remote backend or a tiny test model frees nothing it would find."""
    if freed_bytes >= COLLECT_FROM_BYTES:
        gc.collect()
    trim()


def in_use(loaded: Sequence[LoadedVersion]) -> set[int]:
    """Ids of the versions the memory budget must leave alone: those a request holds, and the
    members of a pinned ensemble (a version assembled from others leases them). A member
    leased only by idle ensembles is not in use: evicting it unloads those ensembles too, so
    they cannot hold the memory budget."""
    by_idle_ensembles: Counter[int] = Counter()
    kept: set[int] = set()  # members of a pinned ensemble are as pinned as it is
    for item in loaded:
        members = item.members
        if item.config.pinned:
            kept.update(id(member) for member in members)
        elif item.leases == 0:
            for member in members:
                by_idle_ensembles[id(member)] += 1
    return kept | {id(item) for item in loaded if item.leases - by_idle_ensembles[id(item)] > 0}
