"""Issue 11, item 4: a bounded queue, a typed `busy` past it, and work for callers that gave up is dropped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd.errors import Busy, DaemonTimeout
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.core.test_leases import hold
from tests.fakebackend import CONTROLS, vector
from tests.inproc import fake_config

BOUNDED = "[daemon]\nmax_queue_texts = 10\nmax_queue_mb = 1\n"


def test_past_the_bound_requests_get_busy_at_once(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=BOUNDED)) as daemon, daemon.client() as a, daemon.client() as b:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[f"held {i}".encode() for i in range(8)])
        assert CONTROLS["v1"].entered.wait(5)
        started = time.monotonic()
        with pytest.raises(Busy) as refused:
            b.encode([f"more {i}" for i in range(8)])
        assert time.monotonic() - started < 0.5
        assert 0 < refused.value.retry_after <= 5
        assert "max_queue_texts" in refused.value.message
        fits = b.send("encode", payload=[b"fits 1", b"fits 2"])  # 8 + 2 = 10: admitted
        status = b.status()["queue"]
        assert status["queued_texts"] == 10 and status["refused"] == 1
        gate.set()
        assert a.receive(held)[0]["count"] == 8
        assert b.receive(fits)[0]["count"] == 2
        assert b.status()["queue"]["queued_texts"] == 0


def test_bytes_bound_and_a_lone_large_request_is_still_served(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=BOUNDED)) as daemon, daemon.client() as a, daemon.client() as b:
        big = ["x" * 200_000] * 6  # 1.2 MB: over max_queue_mb alone, admitted into an empty queue
        assert a.encode(big).count == 6
        gate = hold("v1")
        held = a.send("encode", payload=[b"y" * 200_000] * 3)
        assert CONTROLS["v1"].entered.wait(5)
        with pytest.raises(Busy):
            b.encode(["z" * 250_000] * 2)  # 3 texts, 1.1 MB: under the texts bound, over the bytes bound
        gate.set()
        a.receive(held)


def test_cli_reports_busy_in_one_line_with_its_own_exit_code(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}}, extra=BOUNDED)) as daemon, daemon.client() as a:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[f"held {i}".encode() for i in range(10)])
        assert CONTROLS["v1"].entered.wait(5)
        done = run_hs("encode", "one", "two", endpoint=daemon.endpoint, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
        gate.set()
        a.receive(held)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 75, done.stderr
    assert len(lines) == 1 and lines[0].startswith("hs: error: hotswapd is busy")


def test_queued_work_of_a_caller_that_gave_up_is_not_computed(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as a, daemon.client(timeout=0.3) as impatient:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[b"held"])
        assert CONTROLS["v1"].entered.wait(5)
        with pytest.raises(DaemonTimeout):
            impatient.encode(["abandoned"])
        # The daemon's clock for that deadline started when it received the request, a moment
        # after the client's: under load that moment can be long enough to matter.
        time.sleep(0.3)
        gate.set()
        a.receive(held)
        assert a.encode(["later"]).count == 1
        assert "abandoned" not in CONTROLS["v1"].seen
        assert a.status()["queue"]["queued_texts"] == 0


def test_work_that_would_miss_its_deadline_is_refused_at_once(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as a, daemon.client(timeout=1.0) as hurried:
        CONTROLS["v1"].delay = 0.4
        a.encode(["price"])  # the daemon learns what a batch like this costs
        gate = hold("v1")
        held = a.send("encode", payload=[b"ahead"])
        assert CONTROLS["v1"].entered.wait(5)
        started = time.monotonic()
        with pytest.raises(Busy, match="past this request's deadline of 1 s"):
            hurried.encode(["queued behind the held request"])
        assert time.monotonic() - started < 0.5
        gate.set()
        a.receive(held)


def test_cost_model_separates_per_text_and_per_character_cost() -> None:
    from hotswapd.core.admission import fit_cost

    batches = [(n, c, 0.002 * n + 1e-6 * c) for n, c in [(1, 100), (64, 3000), (8, 80_000), (32, 500), (2, 1_000_000)]]
    per_text, per_char = fit_cost(batches)
    assert abs(per_text - 0.002) < 1e-6 and abs(per_char - 1e-6) < 1e-9
    assert fit_cost([(1, 1000, 0.5)]) == (0.0, 0.0005)  # one kind of batch: all cost on chars
    assert fit_cost([]) == (0.0, 0.0)


def test_a_stream_job_backs_off_on_busy_and_keeps_its_order(start: StartDaemon, tmp_path: Path) -> None:
    import threading

    with start(fake_config(tmp_path, {"v1": {}}, extra=BOUNDED)) as daemon, daemon.client() as a, daemon.client() as streamer:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[f"held {i}".encode() for i in range(8)])
        assert CONTROLS["v1"].entered.wait(5)
        chunks = [[f"chunk {c} text {i}" for i in range(5)] for c in range(4)]
        results: list[object] = []
        worker = threading.Thread(target=lambda: results.extend(streamer.encode_stream(chunks, "m@v1", window=2)))
        worker.start()
        time.sleep(0.4)  # every chunk is refused as busy meanwhile, and retried
        assert not results and daemon.daemon.admission.describe()["refused"] >= 1
        gate.set()
        worker.join(20)
        a.receive(held)
        assert len(results) == 4 and all(r.count == 5 for r in results)  # type: ignore[attr-defined]
        for chunk, result in zip(chunks, results, strict=True):  # yielded in input order
            expected = np.stack([vector(text, 1.0, 8) for text in chunk])
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)
            np.testing.assert_allclose(result.embeddings, expected, rtol=1e-6)  # type: ignore[attr-defined]
