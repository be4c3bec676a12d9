"""Issue 11, item 5: warm-up off the live batch, an immortal inference thread, loads that
do not wait for each other, and bounded health books."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hotswapd.pipeline.batching import Batcher, BatchLimits
from hotswapd.core.health import HealthBook
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_leases import hold, send
from tests.fakebackend import CONTROLS
from tests.inproc import fake_config

LIMITS = BatchLimits(max_batch_size=64, max_batch_tokens=16384, max_wait_ms=0)


def test_warm_up_of_a_new_version_never_runs_beside_a_live_batch(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as a, daemon.client(timeout=20) as b:
        a.encode(["warm up"])
        gate = hold("v1")
        held = send(a, "live batch")
        assert CONTROLS["v1"].entered.wait(5)
        switching = threading.Thread(target=lambda: b.switch("m", "v2"))
        switching.start()
        time.sleep(0.3)  # v2 loads meanwhile; its warm-up must wait for the inference thread
        assert CONTROLS["v2"].loads == 1
        assert fakebackend.max_concurrent == 1, "warm-up ran beside the live batch"
        gate.set()
        a.receive(held)
        switching.join(10)
        assert fakebackend.max_concurrent == 1
        assert a.encode(["after"]).version == "v2"


def test_inference_thread_survives_a_failure_outside_the_backend() -> None:
    sink_calls = []

    def failing_sink(model: str, version: str, texts: int, requests: int) -> None:
        sink_calls.append(texts)
        if len(sink_calls) == 1:
            raise RuntimeError("metrics sink broke")

    batcher = Batcher(lambda loaded, texts, normalize: np.ones((len(texts), 2), dtype="<f4"), failing_sink)
    loaded = SimpleNamespace(model="m", version="v1", timed=True)
    results: list[np.ndarray] = []

    def encode_twice() -> None:
        results.append(batcher.encode(loaded, ["a", "b"], True, LIMITS))  # type: ignore[arg-type]
        results.append(batcher.encode(loaded, ["c"], True, LIMITS))  # type: ignore[arg-type]

    worker = threading.Thread(target=encode_twice, daemon=True)
    worker.start()
    worker.join(5)
    batcher.stop()
    assert not worker.is_alive(), "a request hung: the inference thread died"
    assert [r.shape for r in results] == [(2, 2), (1, 2)]


def test_a_slow_load_does_not_hold_up_another_models_load(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"slow": {}}, model="big") + fake_config(tmp_path, {"fast": {}}, model="small")
    with start(config) as daemon, daemon.client() as a, daemon.client(timeout=5) as b:
        CONTROLS["slow"].load_gate = threading.Event()
        waiting = send(a, "needs the slow model", model="big")
        time.sleep(0.1)
        assert b.encode(["needs the fast one"], model="small").version == "fast"
        assert CONTROLS["slow"].loads == 0
        CONTROLS["slow"].load_gate.set()
        assert a.receive(waiting)[0]["model"] == "big"


def test_health_book_memory_is_bounded_under_traffic() -> None:
    book = HealthBook(window_seconds=3600, max_events=1000)
    for i in range(20_000):
        book.record("m", "v1", i % 10 != 0, 1.0)
    assert book.retained("m", "v1") == 1000
    snapshot = book.snapshot("m", "v1")
    assert snapshot.requests == 1000 and snapshot.errors == 100
