"""What this machine's CPU is and can do: its model name and feature flags.

Which path runs a model fastest, and how accurately int8 and bf16 compute, depend on the
instructions the CPU has (AVX2, AVX-512 VNNI, BF16, AMX), and the CPU under a daemon may
change between starts (a cloud machine resized). Read from /proc/cpuinfo, without torch.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_identity() -> str:
    """The CPU's model name and a digest of its flags: what decides which path is fastest
    and how accurate int8 and bf16 are (the machine under a path may change between starts)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    return f"{name} [{flags}]"


