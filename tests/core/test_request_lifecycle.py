"""A request's life through the core when things go wrong: a stop during a long batch, its
version removed while loading, a failing batch or load, the cost it is counted at (each
forced deterministically)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hotswapd import Client
from hotswapd.core.registry import Registry
from hotswapd.core.switching import Switchboard
from hotswapd.errors import HotswapError, InferenceError, ModelLoadError
from tests.core.conftest import StartDaemon
from tests.core.test_leases import send
from tests.core.test_liveness import LAUNCH
from tests.daemons import REPO, RunningDaemon, daemon_env, short_socket_dir, wait_for, wait_until_answering
from tests.fakebackend import CONTROLS
from tests.inproc import fake_config


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_sigterm_during_a_batch_that_outlives_the_drain_still_exits(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(fake_config(tmp_path, {"v1": {"sleep_seconds": 2.0}}))
    endpoint = "ipc://" + str(short_socket_dir() / "d.sock")
    with open(tmp_path / "daemon.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--socket", endpoint, "--config", str(config), "--drain-seconds", "0.5"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=daemon_env(XDG_STATE_HOME=str(tmp_path / "state")),
        )
        try:
            wait_until_answering(RunningDaemon(process, endpoint, Path(), config, tmp_path / "daemon.log"), 30)
            with Client(endpoint, timeout=10) as client:
                client.send("encode", payload=[b"slow first request"])
                time.sleep(0.3)
                process.send_signal(signal.SIGTERM)
                assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_version_removed_while_it_loads_is_closed_after_its_requests(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as a:
        CONTROLS["v2"].load_gate = threading.Event()
        waiting = send(a, "needs v2", model="m@v2")
        wait_for(lambda: CONTROLS["v2"].load_attempts, lambda n: n == 1)
        daemon.rewrite_config(fake_config(tmp_path, {"v1": {}}))
        CONTROLS["v2"].load_gate.set()
        try:
            a.receive(waiting)
        except HotswapError:
            pass  # answered either way; what matters is what happens to the weights
        wait_for(lambda: CONTROLS["v2"].closes, lambda n: n == 1)


def test_the_rest_of_a_failed_request_is_not_run(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 2}})
    with start(config) as daemon, daemon.client() as a:
        a.encode(["warm"])
        CONTROLS["v1"].fail_on = "a"
        with pytest.raises(InferenceError):
            a.encode(["a", "b", "c", "d", "e", "f"])
        time.sleep(0.2)
        assert not {"c", "d", "e", "f"} & set(CONTROLS["v1"].seen)
        assert a.status()["queue"]["queued_texts"] == 0


def test_requests_waiting_on_a_failing_load_share_its_failure(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as a:
        CONTROLS["v2"].load_gate = threading.Event()
        CONTROLS["v2"].fail_load = "weights are corrupt"
        waiting = [send(a, f"needs v2 #{i}", model="m@v2") for i in range(4)]
        wait_for(lambda: CONTROLS["v2"].load_attempts, lambda n: n == 1)
        time.sleep(0.1)
        CONTROLS["v2"].load_gate.set()
        for request in waiting:
            with pytest.raises(ModelLoadError, match="weights are corrupt"):
                a.receive(request)
        assert CONTROLS["v2"].load_attempts == 1


def test_the_cost_model_is_fed_utf8_bytes_like_admission_counts() -> None:
    from types import SimpleNamespace

    import numpy as np

    from hotswapd.pipeline.batching import Batcher, BatchLimits

    costs: list[tuple[int, int, float]] = []
    batcher = Batcher(lambda loaded, texts, normalize: np.ones((len(texts), 2), dtype="<f4"), lambda *a: None, lambda n, b, s, key: costs.append((n, b, s)))
    try:
        batcher.encode(SimpleNamespace(model="m", version="v", timed=True), ["日本語のテキスト".encode(), "plain"], True, BatchLimits(64, 16384, 0))  # type: ignore[arg-type]
    finally:
        batcher.stop()
    assert costs[0][:2] == (2, len("日本語のテキスト".encode()) + 5)
