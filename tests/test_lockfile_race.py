"""A lock won on a lock file its holder just unlinked guards nothing: take_lock tries again."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hotswapd.host.lockfile import LockHeld, take_lock


def test_a_lock_taken_on_an_unlinked_file_is_taken_again_on_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "job.lock"
    first = take_lock(path)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(take_lock(path)))  # retries for a moment while first holds it
    waiter.start()
    time.sleep(0.05)
    path.unlink()  # the holder lets go the documented way: unlink, then close
    os.close(first)
    waiter.join(5)
    assert got, "the waiter gave up"
    # The waiter's lock is on the file now at the path, so a third comer is refused.
    with pytest.raises(LockHeld):
        take_lock(path)
    os.close(got[0])
