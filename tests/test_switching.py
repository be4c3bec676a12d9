"""Versions and switching on a real daemon with real (tiny) models."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.errors import HotswapError, IncompatibleVersions, InferenceError, ModelLoadError, NothingToRollBack
from tests.conftest import run_hs
from tests.daemons import RunningDaemon, start_daemon, wait_ready, write_config

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

LONG = " ".join(["token"] * 40)  # over the rigged model's 20 positions


def versions_block(model: str, paths: dict[str, Path], names: list[str], extra: str = "") -> str:
    blocks = [f'[models.{model}]\nactive = "{names[0]}"\n{extra}']
    for name in names:
        blocks.append(f'[models.{model}.versions.{name}]\nsource = "{paths[name.split("_")[0]]}"\nmax_seq_length = 64\n')
    return "\n".join(blocks)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("switching")
    paths = {**tiny_models, "ghost": Path("/nonexistent/model")}
    text = "\n".join(
        [
            '[daemon]\ndefault_model = "stress"\n',
            versions_block("stress", paths, ["v1", "v2"]),
            versions_block("guard", paths, ["v1", "v2", "wide", "ghost"]),
            versions_block("claims", paths, ["v1", "v2"]).replace(
                '[models.claims.versions.v2]\n', '[models.claims.versions.v2]\ncompatible_with = "v1"\n'
            ),
            versions_block("canary", paths, ["v1", "v2"]),
            versions_block("gradual", paths, ["v1", "v2"]),
            versions_block("rigged", paths, ["v1", "rigged"], extra="[models.rigged.health]\nmin_requests = 10\nmax_error_rate = 0.2\n"),
            versions_block("inflight", paths, ["v1", "v2"]),
        ]
    )
    daemon = start_daemon(write_config(workdir / "config.toml", text), workdir)
    with daemon.client() as client:
        wait_ready(client)
    yield daemon
    assert daemon.stop() == 0, daemon.log()


@pytest.fixture()
def client(daemon: RunningDaemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


def references(client: Client, model: str, texts: list[str]) -> dict[str, np.ndarray]:
    return {v: client.encode(texts, f"{model}@{v}").embeddings.copy() for v in ("v1", "v2")}


def test_immediate_switch_rollback_and_history(client: Client, daemon: RunningDaemon) -> None:
    before = client.encode(["x"], "guard")
    assert before.version == "v1" and len(before.fingerprint or "") == 16
    assert client.switch("guard", "v2") == {"model": "guard", "from": "v1", "to": "v2", "strategy": "immediate", "outcome": "done", "forced": False, "persisted": True}
    after = client.encode(["x"], "guard")
    assert after.version == "v2" and after.fingerprint != before.fingerprint
    assert client.switch("guard", "v2")["outcome"] == "unchanged"
    assert client.rollback("guard")["to"] == "v1"
    assert client.encode(["x"], "guard").version == "v1"
    events = [(e["event"], e["from"], e["to"], e["trigger"], e["outcome"]) for e in client.history("guard")]
    # Made through the Python client, so recorded as the API (issue 13); `hs` records "cli".
    assert events[-2:] == [("switch", "v1", "v2", "api", "done"), ("rollback", "v2", "v1", "api", "done")]
    done = run_hs("history", "guard", "--json", endpoint=daemon.endpoint)
    assert done.returncode == 0 and b'"rollback"' in done.stdout


def test_incompatible_switch_is_refused_unless_forced(client: Client) -> None:
    with pytest.raises(IncompatibleVersions, match="dimension 32 -> 48"):
        client.switch("guard", "wide")
    assert client.encode(["x"], "guard").version == "v1"
    assert client.switch("guard", "wide", force=True)["forced"] is True
    assert client.encode(["x"], "guard").dim == 48
    assert client.history("guard")[-1]["forced"] is True
    client.rollback("guard")
    assert client.encode(["x"], "guard").version == "v1"


def test_compatible_with_is_checked_on_the_probe_set(client: Client) -> None:
    with pytest.raises(IncompatibleVersions, match="claims compatibility with v1 but their vectors agree only"):
        client.switch("claims", "v2")
    assert client.encode(["x"], "claims").version == "v1"


def test_failed_load_leaves_the_old_version_serving(client: Client) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        client.switch("guard", "ghost")
    assert client.encode(["x"], "guard").version == "v1"
    last = client.history("guard")[-1]
    assert (last["to"], last["outcome"]) == ("ghost", "failed") and "does not exist" in last["reason"]


def test_nothing_to_roll_back(client: Client) -> None:
    with pytest.raises(NothingToRollBack):
        client.rollback("canary")


def test_a_request_may_pin_a_version(client: Client) -> None:
    assert client.encode(["x"], "stress@v2").version == "v2"
    assert client.encode(["x"], "stress").version == "v1"
    with pytest.raises(HotswapError, match="has no version 'v9'"):
        client.encode(["x"], "stress@v9")


def test_stress_100_switches_under_load_zero_errors(daemon: RunningDaemon, client: Client) -> None:
    pool = [f"stress sentence number {i} about topic {i % 7}" for i in range(40)]
    expected = references(client, "stress", pool)
    assert np.abs(expected["v1"] - expected["v2"]).max() > 0.1
    stop = threading.Event()
    counts: Counter[str] = Counter()
    failures: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with daemon.client() as own:
            while not stop.is_set():
                index = int(rng.integers(len(pool)))
                try:
                    result = own.encode([pool[index]], "stress")
                except HotswapError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if not np.allclose(result.embeddings[0], expected[result.version][index], atol=1e-5):
                    failures.append(f"vector of text {index} does not match {result.version}")
                counts[result.version] += 1

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    switches = 0
    deadline = time.monotonic() + 240
    try:
        while (switches < 100 or sum(counts.values()) < 10_000) and time.monotonic() < deadline:
            # About 100 switches spread over the 10 000 requests.
            seen = sum(counts.values())
            client.switch("stress", "v2" if switches % 2 == 0 else "v1")
            switches += 1
            while sum(counts.values()) < seen + 95 and time.monotonic() < deadline and not failures:
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert switches >= 100 and sum(counts.values()) >= 10_000, (switches, counts)
    assert counts["v1"] > 1000 and counts["v2"] > 1000
    client.switch("stress", "v1")


def test_canary_share_and_sticky_keys(client: Client) -> None:
    started = client.switch("canary", "v2", "canary", share=10)
    assert started["outcome"] == "started"
    sides = Counter(client.encode(["c"], "canary").version for _ in range(2000))
    # unkeyed requests split at random: 2,000 draws at 10% have a standard deviation of
    # 0.67 points, so 3.5 points is 5 of them (a false alarm about once in 3 million runs)
    assert abs(sides["v2"] / 2000 - 0.10) <= 0.035, sides
    client.abort_rollout("canary")

    client.switch("canary", "v2", "canary", share=30, sticky=True)
    for key in (f"user-{i}" for i in range(40)):
        seen = {client.encode(["c"], "canary", key=key).version for _ in range(5)}
        assert len(seen) == 1, (key, seen)
    status = client.status()
    assert status["rollouts"]["canary"]["share"] == 30.0 and status["rollouts"]["canary"]["sticky"] is True
    assert client.abort_rollout("canary")["outcome"] == "aborted"
    assert client.encode(["c"], "canary").version == "v1"


def test_gradual_rollout_steps_to_completion(client: Client) -> None:
    client.switch("gradual", "v2", "gradual", steps=[25, 50, 100], step_requests=5, step_seconds=None)
    deadline = time.monotonic() + 60
    while client.status()["active"]["gradual"] != "v2":
        assert time.monotonic() < deadline, client.status()
        client.encode(["g"], "gradual")
    events = [(e["event"], e.get("share")) for e in client.history("gradual")]
    assert ("rollout_step", 50.0) in events and events[-1] == ("rollout_complete", 100.0)
    assert client.encode(["g"], "gradual").version == "v2"


def test_failing_version_is_rolled_back_automatically(client: Client, daemon: RunningDaemon) -> None:
    client.switch("rigged", "rigged", "gradual", steps=[50, 100], step_requests=10_000, step_seconds=None)
    errors = 0
    deadline = time.monotonic() + 60
    while "rigged" in client.status()["rollouts"]:
        assert time.monotonic() < deadline
        try:
            client.encode([LONG], "rigged")
        except InferenceError:
            errors += 1
    assert errors >= 1
    assert client.encode([LONG], "rigged").version == "v1"
    last = client.history("rigged")[-1]
    assert last["event"] == "auto_rollback" and last["trigger"] == "health" and "error rate" in last["reason"]
    table = run_hs("history", "rigged", endpoint=daemon.endpoint, env={"COLUMNS": "200"}).stdout.decode()
    assert "auto_rollback" in table


def test_requests_in_flight_finish_on_their_version(daemon: RunningDaemon, client: Client) -> None:
    texts = [" ".join(f"w{i}x{j}" for j in range(60)) for i in range(3000)]
    outcome: dict[str, object] = {}

    def long_request() -> None:
        # A long deadline: on a loaded CI machine the load's cost probe can price 3,000
        # texts near the default 120 s, and admission then refuses at once (what this
        # test is about is the switch, not admission).
        with daemon.client(timeout=900) as own:
            try:
                outcome["result"] = own.encode(texts, "inflight")
            except Exception as exc:  # noqa: BLE001 -- reported by the assertion below
                outcome["error"] = exc

    thread = threading.Thread(target=long_request)
    thread.start()
    while client.status()["in_flight"] == 0 and thread.is_alive():
        pass
    client.switch("inflight", "v2")
    thread.join()
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert result.version == "v1"  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.embeddings[:3], client.encode(texts[:3], "inflight@v1").embeddings, atol=1e-5)  # type: ignore[attr-defined]
    assert client.encode(["x"], "inflight").version == "v2"


def test_metrics_and_compare(daemon: RunningDaemon) -> None:
    text = run_hs("metrics", endpoint=daemon.endpoint).stdout.decode()
    assert 'hotswapd_requests_total{model="stress",outcome="ok",version="v1"}' in text
    assert 'hotswapd_active_version{model="guard",version="v1"} 1.0' in text
    assert "hotswapd_inference_seconds_bucket" in text and "hotswapd_switches_total" in text
    import json

    same_space = json.loads(run_hs("compare", "guard", "v1", "v2", "--json", endpoint=daemon.endpoint).stdout)
    assert -1 <= same_space["mean_cosine"] < 0.99 and 0 <= same_space["neighbour_overlap"] <= 1
    identical = json.loads(run_hs("compare", "guard", "v1", "v1", "--json", endpoint=daemon.endpoint).stdout)
    assert identical["mean_cosine"] > 0.9999 and identical["neighbour_overlap"] == 1.0
    other_space = json.loads(run_hs("compare", "guard", "v1", "wide", "--json", endpoint=daemon.endpoint).stdout)
    assert other_space["mean_cosine"] is None and other_space["versions"]["wide"]["dim"] == 48


def test_hs_switch_command_lines(daemon: RunningDaemon) -> None:
    done = run_hs("switch", "guard", "v2", endpoint=daemon.endpoint)
    assert done.returncode == 0 and done.stdout.decode().strip() == "guard: v1 -> v2"
    refused = run_hs("switch", "guard", "wide", endpoint=daemon.endpoint)
    assert refused.returncode == 1 and refused.stderr.decode().startswith("hs: error: guard@wide does not share v2's embedding space")
    back = run_hs("rollback", "guard", endpoint=daemon.endpoint)
    assert back.stdout.decode().strip() == "guard: v2 -> v1"
    canary = run_hs("switch", "canary", "v2", "--canary", "5", endpoint=daemon.endpoint)
    assert "canary rollout of v2 started" in canary.stdout.decode()
    assert "rollout canary" in run_hs("status", endpoint=daemon.endpoint).stdout.decode()
    aborted = run_hs("switch", "canary", "--abort", endpoint=daemon.endpoint)
    assert "aborted" in aborted.stdout.decode()
