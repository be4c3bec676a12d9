"""One job per output at a time: a second would clear or interleave the first's files.

The lock is a file beside the output (``.NAME.lock``), flock'd for as long as the job runs
(:func:`hotswapd.host.lockfile.take_lock`: it names the holder, and dies with it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hotswapd.host.lockfile import LockHeld, take_lock
from hotswapd.jobs.job_record import JobError


@contextmanager
def only_job(output: Path, then: str = "wait for it, or stop it and --resume") -> Iterator[None]:
    lock = output.with_name(f".{output.name}.lock")
    try:
        fd = take_lock(lock)
    except LockHeld as held:
        raise JobError(f"another job ({held.owner}) is writing {output}; {then}") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a newcomer never locks a file we then delete
        os.close(fd)
