"""Issue 11, item 1: a version is closed only after the last request that picked it is done.

Each test holds a request inside the fake backend (or queued behind one), unloads the
version in one of the ways the daemon can (evict, a reload after a config edit, the memory
budget), then lets the request go: it must be answered from the version it picked, and
the version must be closed only afterwards.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from hotswapd import Client
from tests.core.conftest import StartDaemon
from tests.daemons import wait_for
from tests.fakebackend import CONTROLS, vector
from tests.inproc import fake_config


def hold(tag: str) -> threading.Event:
    """Make the next encode of ``tag`` block until the returned event is set."""
    control = CONTROLS[tag]
    control.gate = threading.Event()
    control.entered.clear()
    return control.gate


def send(client: Client, text: str, model: str | None = None) -> str:
    return client.send("encode", model=model, payload=[text.encode()])


def test_evict_lets_running_and_queued_requests_finish(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as a, daemon.client() as b:
        a.encode(["warm up"])
        gate = hold("v1")
        running = send(a, "running")
        assert CONTROLS["v1"].entered.wait(5)
        queued = send(a, "queued")  # picks v1 now, waits in the batcher behind `running`
        time.sleep(0.05)
        assert b.evict("m")["evicted"] == ["v1"]
        assert CONTROLS["v1"].closes == 0, "closed under two requests that picked it"
        assert "m@v1" in b.status()["draining"]
        gate.set()
        a.receive(running)
        a.receive(queued)
        wait_for(lambda: CONTROLS["v1"].closes, lambda closes: closes == 1)
        wait_for(lambda: b.status()["draining"], lambda draining: draining == [])
        assert a.encode(["after"]).version == "v1"  # loads again on demand
        assert CONTROLS["v1"].loads == 2


def test_reload_after_config_edit_finishes_requests_on_the_old_weights(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {"scale": 1.0}})) as daemon, daemon.client() as a:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[b"held"], options={"normalize": False})
        assert CONTROLS["v1"].entered.wait(5)
        result = daemon.rewrite_config(fake_config(tmp_path, {"v1": {"scale": 3.0}}))
        assert result["reloaded"] == ["m@v1"]
        wait_for(lambda: CONTROLS["v1"].loads, lambda loads: loads == 2)  # the fresh copy is in
        assert CONTROLS["v1"].closes == 0, "the old copy was closed under a request"
        gate.set()
        body, payload = a.receive(held)
        old = np.frombuffer(payload[0], dtype="<f4")
        np.testing.assert_allclose(old, vector("held", 1.0, 8))
        wait_for(lambda: CONTROLS["v1"].closes, lambda closes: closes == 1)
        fresh = a.encode(["held"], normalize=False).embeddings[0]
        np.testing.assert_allclose(fresh, vector("held", 3.0, 8))


def test_serving_only_fields_apply_live_without_a_reload(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        client.encode(["warm up"])
        result = daemon.rewrite_config(fake_config(tmp_path, {"v1": {"max_wait_ms": 7.5, "max_batch_size": 3, "batch_size": 4, "pinned": True}}))
        assert result["reloaded"] == []
        assert result["applied_live"] == ["m@v1 (batch_size, max_batch_size, max_wait_ms, pinned)"]
        assert CONTROLS["v1"].loads == 1 and CONTROLS["v1"].closes == 0
        loaded = daemon.daemon.registry.peek("m", "v1")
        assert loaded is not None and loaded.config.max_wait_ms == 7.5 and loaded.embedder.batch_size == 4
        assert client.encode([f"t{i}" for i in range(7)]).count == 7  # split in pieces of 3
        history = client.history("m", all_events=True)
        assert not [entry for entry in history if entry["event"] == "reload"]


def test_memory_budget_counts_a_draining_version_until_it_is_closed(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"ram_gb": 0.6}, "v2": {"ram_gb": 0.6}}, extra="[memory]\nmax_gb = 1.0\n")
    with start(config) as daemon, daemon.client() as a, daemon.client() as b:
        a.encode(["warm up"])
        gate = hold("v1")
        held = send(a, "held")
        assert CONTROLS["v1"].entered.wait(5)
        b.evict("m")
        def preload_v2() -> None:
            with Client(daemon.endpoint, timeout=20) as c:
                c.preload("m@v2")

        loading = threading.Thread(target=preload_v2)
        loading.start()
        time.sleep(0.3)
        assert CONTROLS["v2"].loads == 0, "v2 loaded while v1's memory was still held by a request"
        gate.set()
        a.receive(held)
        loading.join(10)
        assert not loading.is_alive() and CONTROLS["v2"].loads == 1
        assert CONTROLS["v1"].closes == 1
