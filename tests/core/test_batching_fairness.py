"""Batches are shared fairly between requests, and admission prices a request by its
share: a single text queued behind a big request runs in the next batch, and a short
deadline is not refused as busy for the big request's sake (issue 27: with first in,
first out, a ZeroMQ client was refused while an abandoned 15 MB HTTP request was queued)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config

SMALL_BATCHES = "[daemon]\nmax_batch_size = 2\nmax_wait_ms = 0\n[cache]\nmax_mb = 0\n"


def encoding(daemon: object, texts: list[str], timeout: float = 30.0) -> threading.Thread:
    """A client encoding ``texts`` on a thread of its own (started)."""

    def run() -> None:
        with daemon.client(timeout=timeout) as client:  # type: ignore[attr-defined]
            client.encode(texts, "m")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_single_text_runs_in_the_next_batch_not_after_a_big_request(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        big = [f"big text {i}" for i in range(40)]  # 20 batches of 2, one at a time
        threads = [encoding(daemon, big)]
        assert control.entered.wait(5)  # its first batch is on the model (held)
        threads.append(encoding(daemon, ["single"]))
        deadline = time.monotonic() + 5
        while daemon.daemon.admission.describe()["queued_texts"] < 41 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for thread in threads:
            thread.join(10)
        seen = control.seen
        assert seen.index("single") == 2, seen[:6]  # right after the batch that was running
        assert sorted(seen) == sorted([*big, "single"])


def test_two_big_requests_take_turns(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        first, second = [f"a{i}" for i in range(20)], [f"b{i}" for i in range(20)]
        threads = [encoding(daemon, first)]
        assert control.entered.wait(5)
        threads.append(encoding(daemon, second))
        deadline = time.monotonic() + 5
        while daemon.daemon.admission.describe()["queued_texts"] < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for thread in threads:
            thread.join(10)
        owners = "".join(text[0] for text in control.seen)
        # After the batch in hand, they alternate batch by batch until one is done.
        assert owners[:10] == "aabbaabbaa", owners


def test_a_short_deadline_is_admitted_behind_a_big_request(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=SMALL_BATCHES)) as daemon, daemon.client(timeout=10) as client:
        control = fakebackend.CONTROLS["v1"]
        control.delay = 0.02  # 10 ms a text: the cost model learns it from these batches
        client.encode([f"warm {i}" for i in range(40)], "m")
        big = [f"big text {i}" for i in range(400)]  # about 4 s of work queued
        worker = encoding(daemon, big)
        deadline = time.monotonic() + 5
        while daemon.daemon.admission.describe()["queued_texts"] < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        result = client.encode(["single"], "m", timeout=1.0)  # first in, first out: refused as busy (4 s ahead)
        assert result.count == 1 and time.monotonic() - started < 1.0
        worker.join(30)
