"""Issue 11, item 4: a bounded queue, a typed `busy` past it, and work for callers that gave up is dropped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd.errors import Busy, DaemonTimeout, DeadlineExceeded
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
        with pytest.raises((Busy, DaemonTimeout)):  # answered `busy` just before its deadline, by the queue's shedding
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
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as a, daemon.client(timeout=0.5) as hurried:
        CONTROLS["v1"].delay_per_text = 0.1
        for i in range(4):  # the daemon learns what its batches cost (past its load's probe)
            a.encode([f"price {i} {j}" + "x" * (7 * j) for j in range(i + 1)])
        gate = hold("v1")
        held = a.send("encode", payload=[b"ahead", b"ahead 2", b"ahead 3"])
        assert CONTROLS["v1"].entered.wait(5)
        started = time.monotonic()
        with pytest.raises(Busy, match="past this request's deadline of 0.5 s"):
            hurried.encode(["later", "and later"])  # alone it fits (0.2 s of 0.5 s), behind the held three it does not
        assert time.monotonic() - started < 0.5
        gate.set()
        a.receive(held)


def test_cost_model_separates_per_text_and_per_character_cost() -> None:
    from hotswapd.core.admission import fit_cost

    batches = [(n, c, 0.002 * n + 1e-6 * c) for n, c in [(1, 100), (64, 3000), (8, 80_000), (32, 500), (2, 1_000_000)]]
    per_batch, per_text, per_char = fit_cost(batches)
    assert per_batch == 0.0 and abs(per_text - 0.002) < 1e-6 and abs(per_char - 1e-6) < 1e-9
    assert fit_cost([(1, 1000, 0.5)]) == pytest.approx((0.0, 0.0, 0.0005))  # one kind of batch: all cost on chars
    assert fit_cost([]) == (0.0, 0.0, 0.0)


def test_a_model_calls_own_cost_is_not_charged_to_each_text() -> None:
    """Before (no per-batch term): after single-text batches on a busy machine, each costing
    0.2 s of which 0.19 s is the call itself, a 512-text request was priced at 100 s and
    refused against its 60 s deadline (CI: tests/test_cli.py's 3,000-line pipe)."""
    from hotswapd.core.admission import Admission, fit_cost, limits_from

    singles = [(1, 40, 0.19 + 0.004 + 40e-6)] * 40
    probe = [(16, 640, 0.19 + 16 * 0.004 + 640e-6), (4, 4000, 0.19 + 4 * 0.004 + 4000e-6)]
    per_batch, per_text, per_byte = fit_cost(singles + probe)
    assert per_batch == pytest.approx(0.19, rel=1e-3) and per_text == pytest.approx(0.004, rel=1e-2)
    admission = Admission(limits_from(100_000, 512))
    for batch in singles + probe:
        admission.observe(*batch, key=("m", "v1"))
    admission.admit(512, 512 * 40, 60.0, key=("m", "v1")).release()  # 8 calls x 0.19 s + 512 x 4 ms: about 3.6 s


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


def test_each_version_is_priced_by_its_own_batches() -> None:
    """Before: one cost model for every version, so a slow fp32 version's batches priced
    its int8 sibling's requests (refused though they would have been done in time)."""
    from hotswapd.core.admission import Admission, limits_from

    admission = Admission(limits_from(10_000, 64))
    for texts in (4, 16, 64):
        admission.observe(texts, texts * 100, texts * 0.05, key=("m", "fp32"))  # 50 ms a text
        admission.observe(texts, texts * 100, texts * 0.001, key=("m", "int8"))  # 1 ms a text
    admission.admit(20, 2_000, key=("m", "fp32"))  # 1 s queued on the slow one
    assert admission.admit(100, 10_000, deadline_seconds=1.5, key=("m", "int8"))  # 1 s + 0.1 s: in time
    with pytest.raises(Busy, match="past this request's deadline"):
        admission.admit(20, 2_000, deadline_seconds=1.5, key=("m", "fp32"))  # 1.1 s + 1 s: not


def test_a_request_that_alone_would_miss_its_deadline_is_refused_with_the_estimate() -> None:
    """Before: an empty queue skipped the deadline check, so a request that could never
    finish in time was admitted, computed, and lost to its client's timeout."""
    from hotswapd.core.admission import Admission, limits_from
    from hotswapd.errors import DeadlineExceeded

    admission = Admission(limits_from(100_000, 64))
    for texts in (4, 32):
        admission.observe(texts, texts * 1000, texts * 0.02, key=("m", "v1"))  # 20 ms a 1 KB text
    with pytest.raises(DeadlineExceeded, match=r"alone would take about 10\.0 s .* deadline of 5 s") as refused:
        admission.admit(500, 500_000, deadline_seconds=5, key=("m", "v1"))
    assert refused.value.code != Busy("x").code  # retrying cannot help: not `busy`
    assert admission.admit(100, 100_000, deadline_seconds=5, key=("m", "v1"))  # 2 s: in time
    assert admission.admit(500, 500_000, key=("m", "v1"))  # no deadline: no estimate stands in the way


def test_memory_is_given_back_after_a_burst_by_what_it_grew_not_by_its_bytes() -> None:
    """Before: a drain trimmed only after 32 MiB of text, so 16 MB of 1 KB texts, whose
    activations had grown RSS by 800 MiB, never gave anything back."""
    from hotswapd.core.admission import Admission, limits_from
    from hotswapd.core.burst_memory import BurstMemory

    rss = [200 * 2**20]
    gave: list[int] = []

    def give_back() -> bool:
        gave.append(rss[0])
        rss[0] = 210 * 2**20  # what the burst grew, given back (all but 10 MiB)
        return True

    watch = BurstMemory(lambda: rss[0], give_back)
    watch.settle()
    admission = Admission(limits_from(1_000_000, 1024), on_drained=watch.check)
    tickets = [admission.admit(500, 500 * 1024) for _ in range(32)]  # 16 MB of text
    rss[0] = 1000 * 2**20  # the burst's activations
    for ticket in tickets:
        ticket.release()  # the last one drains the queue
    assert gave == [1000 * 2**20] and watch.given_back == 1
    rss[0] = 230 * 2**20  # 20 MiB more since: under the 32 the watch waits for
    admission.admit(2, 40).release()
    assert watch.given_back == 1
    # Review: a give-back the daemon skipped (traffic came back) took the growth for the resting size
    busy = BurstMemory(lambda: rss[0], lambda: False)
    busy.settle()
    rss[0] += 64 * 2**20
    assert busy.check() is False and busy.given_back == 0
    busy._give_back = give_back  # type: ignore[method-assign]  # the daemon is idle again
    assert busy.check() is True and busy.given_back == 1


def test_a_cold_daemon_prices_a_burst_from_its_load_probe(start: StartDaemon, tmp_path: Path) -> None:
    """Before: with no batch run yet every wait was priced at 0 s: a burst right after the
    start was admitted whole and every client timed out."""
    config = fake_config(tmp_path, {"v1": {"preload": True, "probe_seconds": 0.05}})  # a probe batch (16 short, 4 long texts): 50 ms
    with start(config) as daemon, daemon.client(timeout=2.0) as client:
        deadline = time.monotonic() + 10
        while CONTROLS["v1"].probes < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert CONTROLS["v1"].probes == 5  # the warm-up call, and two timed batches run twice each
        assert daemon.daemon.admission.coefficients(("m", "v1")) != (0.0, 0.0)
        # 400 one-KB texts are about 5 s at what the probe measured: refused at once, with the estimate
        started = time.monotonic()
        from hotswapd.errors import DeadlineExceeded

        refused = client.send("encode", payload=[b"x" * 1000] * 400, options={"deadline_ms": 2000})
        with pytest.raises(DeadlineExceeded, match="alone would take about"):
            client.receive(refused)
        assert time.monotonic() - started < 1.0


def test_the_queue_sheds_what_cannot_be_reached_before_its_deadline() -> None:
    """Before: the queue was looked at only between batches, and never priced: pieces that
    could not be reached in time waited, and their clients timed out."""
    import threading
    from types import SimpleNamespace

    from hotswapd.pipeline.batching import Batcher, BatchLimits
    from hotswapd.pipeline.deadline import Deadline

    batcher, gate, running = _held_batcher(0.2)  # 200 ms a text
    loaded = SimpleNamespace(model="m", version="v1", timed=True)
    limits = BatchLimits(max_batch_size=1, max_batch_tokens=1000, max_wait_ms=0)
    answers: dict[int, object] = {}
    try:
        batcher.submit(loaded, ["held"], True, limits, lambda rows, error, timing: answers.setdefault(-1, rows))  # type: ignore[arg-type]
        assert running.wait(5)
        at = Deadline.within(1.2)
        for i in range(10):
            batcher.submit(loaded, [f"t{i}"], True, limits, lambda rows, error, timing, i=i: answers.setdefault(i, error), at)  # type: ignore[arg-type]
        # the held batch ends in about 0.2 s, then a text each 0.2 s, answered 0.1 s before 1.2 s: four make it
        assert batcher.shed() == 6
        assert sorted(answers) == [4, 5, 6, 7, 8, 9] and all(isinstance(answers[i], Busy) for i in answers)
        assert all(0.05 <= answers[i].retry_after <= 5 for i in answers)  # type: ignore[attr-defined]
        assert batcher.shed() == 0  # what is left can still be reached
    finally:
        gate.set()
        batcher.stop()
    assert sorted(answers) == [-1, *range(10)] and all(answers[i] is None for i in range(4))


def test_a_queued_request_whose_deadline_passes_mid_batch_is_answered_at_its_deadline(start: StartDaemon, tmp_path: Path) -> None:
    """Before: a request queued behind a long batch was answered only when that batch ended,
    long after its deadline (its client had timed out by then)."""
    from hotswapd.errors import DeadlineExceeded

    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as a, daemon.client() as b:
        a.encode(["warm up"])
        gate = hold("v1")
        held = a.send("encode", payload=[b"a long batch"])
        assert CONTROLS["v1"].entered.wait(5)
        started = time.monotonic()
        waiting = b.send("encode", payload=[b"queued behind it"], options={"deadline_ms": 400})
        try:
            with pytest.raises((DeadlineExceeded, Busy)):
                b.receive(waiting, timeout=5)
            assert time.monotonic() - started < 1.5
        finally:
            gate.set()
        a.receive(held)
        assert "queued behind it" not in CONTROLS["v1"].seen
        # Review: what the queue shed is no fault of the version; counted, it rolled healthy canaries back
        assert daemon.daemon.health.snapshot("m", "v1").errors == 0


def test_after_a_drained_burst_each_loaded_version_gives_its_memory_back(start: StartDaemon, tmp_path: Path) -> None:
    """Before: only glibc's heap was trimmed; ONNX Runtime's arena kept what the burst's
    largest batch needed (all-MiniLM-L6-v2: 175 -> 623 MiB, 603 after the trim)."""
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        client.encode(["load v2 too"], "m@v2")
        daemon.daemon.burst_memory.settle()
        assert CONTROLS["v1"].releases == CONTROLS["v2"].releases == 0
        grown = b"\x01" * (64 * 2**20)  # what a burst's activations hold (this process is the daemon's)
        client.encode(["a request that drains the queue"])
        deadline = time.monotonic() + 10
        while CONTROLS["v2"].releases < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert CONTROLS["v1"].releases == CONTROLS["v2"].releases == 1
        assert daemon.daemon.burst_memory.given_back == 1
        del grown
        assert client.encode(["still serving"]).count == 1


def test_estimates_that_refuse_are_kept_honest() -> None:
    """Review: a version never measured was refused by another's batches and so never
    loaded; four like batches put all their cost on bytes and refused a 1 KB text as 3.4 s;
    a slow spell left an estimate that refused for ever (refusals time nothing)."""
    from hotswapd.core import admission as module
    from hotswapd.core.admission import Admission, limits_from

    admission = Admission(limits_from(100_000, 64))
    for texts in (4, 32):
        admission.observe(texts, texts * 1000, texts * 0.5, key=("m", "slow"))
    admission.admit(100, 100_000, deadline_seconds=2, key=("m", "fast")).release()  # never measured: not refused outright
    admission.observe(16, 700, 0.01, key=("m", "v"), prior=True)
    admission.observe(4, 4000, 0.02, key=("m", "v"), prior=True)
    for _ in range(4):
        admission.observe(1, 6, 0.02, key=("m", "v"))  # like batches: they cannot price a long text alone
    per_text, per_byte = admission.coefficients(("m", "v"))
    assert per_text + 1024 * per_byte < 0.5
    admission.observe(10, 10_000, 5.0, key=("m", "spell"))
    admission.observe(1, 1_000, 0.5, key=("m", "spell"))
    with pytest.raises(DeadlineExceeded):
        admission.admit(10, 10_000, deadline_seconds=2, key=("m", "spell"))
    admission._observed_at[("m", "spell")] -= module.RECHECK_SECONDS  # the slow spell is old news
    assert admission.admit(10, 10_000, deadline_seconds=2, key=("m", "spell"))  # let through, to be timed again


def test_shedding_a_piece_sheds_its_siblings_in_the_same_pass() -> None:
    """Review: a request's other pieces stayed queued in the pass that shed one of them, and
    their cost got another request shed that would have made its deadline."""
    import threading
    from types import SimpleNamespace

    from hotswapd.pipeline.batching import Batcher, BatchLimits
    from hotswapd.pipeline.deadline import Deadline

    batcher, gate, running = _held_batcher(0.1)
    loaded = SimpleNamespace(model="m", version="v1", timed=True)
    answers: dict[str, object] = {}
    try:
        batcher.submit(loaded, ["held"], True, BatchLimits(1, 1000, 0), lambda rows, error, timing: None)  # type: ignore[arg-type]
        assert running.wait(5)
        limits = BatchLimits(max_batch_size=5, max_batch_tokens=1000, max_wait_ms=0)
        batcher.submit(loaded, [f"r{i}" for i in range(6)], True, limits, lambda rows, error, timing: answers.setdefault("r", error), Deadline.within(0.45))  # type: ignore[arg-type]
        batcher.submit(loaded, ["s0", "s1"], True, limits, lambda rows, error, timing: answers.setdefault("s", error), Deadline.within(0.45))  # type: ignore[arg-type]
        batcher.shed()
        assert isinstance(answers.get("r"), Busy) and "s" not in answers  # s fits: 0.1 s + 0.2 s < 0.35 s
    finally:
        gate.set()
        batcher.stop()
    assert answers["s"] is None


def test_a_tight_deadline_is_not_shed_for_the_slack_alone() -> None:
    """Review: the 0.1 s the answer needs to travel was taken from every deadline, so a
    request with a 100 ms deadline that a tick found queued was shed, however fast the model."""
    import threading
    from types import SimpleNamespace

    from hotswapd.pipeline.batching import Batcher, BatchLimits
    from hotswapd.pipeline.deadline import Deadline

    batcher, gate, running = _held_batcher(0.001)  # 1 ms a text
    loaded = SimpleNamespace(model="m", version="v1", timed=True)
    limits = BatchLimits(max_batch_size=4, max_batch_tokens=1000, max_wait_ms=0)
    answers: dict[str, object] = {}
    try:
        batcher.submit(loaded, ["held"], True, limits, lambda rows, error, timing: None)  # type: ignore[arg-type]
        assert running.wait(5)
        batcher.submit(loaded, ["quick"], True, limits, lambda rows, error, timing: answers.setdefault("quick", error), Deadline.within(0.1))  # type: ignore[arg-type]
        assert batcher.shed() == 0 and not answers  # due in ~2 ms of its 100
    finally:
        gate.set()
        batcher.stop()
    assert "quick" in answers  # answered once the held batch ended (vectors, or its deadline if that was too late)


def _held_batcher(seconds_per_text: float):  # type: ignore[no-untyped-def]
    """A batcher priced at ``seconds_per_text``, whose batches wait on ``gate`` (``running``
    is set when one has begun): what is queued behind a long batch, made deterministic."""
    import threading

    from hotswapd.pipeline.batching import Batcher

    gate, running = threading.Event(), threading.Event()

    def run(loaded: object, texts: list[str], normalize: bool) -> np.ndarray:
        running.set()
        gate.wait(10)
        return np.ones((len(texts), 2), dtype="<f4")

    return Batcher(run, lambda *args: None, coefficients=lambda key: (seconds_per_text, 0.0)), gate, running
