"""Periodic comparative benchmarks while serving (issue 18, item 1): rounds run when due and
only in idle moments, go through the registry, append to bench.jsonl marked periodic with a
recommendation, alert on a regression, and never load a version just to measure it unless
told to."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from hotswapd.benchmarking.periodic import probe_set
from hotswapd.config.schema import parse_config
from hotswapd.errors import ConfigError
from tests import fakebackend
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import InprocDaemon, fake_config

PROBES = set(probe_set())


def _config(tmp_path: Path, bench: str, extra: str = "") -> str:
    versions = {"v1": {"dim": 16}, "v2": {"dim": 16}, "far": {"dim": 16, "shift": 7}, "cold": {"dim": 16}}
    # max_share = 1: no spacing between slices, or a round of the slow fakes would take seconds.
    return fake_config(tmp_path, versions, extra=f"[bench]\nmax_share = 1\n{bench}\n{extra}")


def _history(inproc: InprocDaemon) -> list[dict]:
    path = inproc.workdir / "state" / "hotswapd" / "bench.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_rounds(inproc: InprocDaemon, rounds: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while inproc.daemon.periodic.rounds < rounds and time.monotonic() < deadline:
        time.sleep(0.02)
    assert inproc.daemon.periodic.rounds >= rounds, inproc.daemon.periodic.last_problem


def _probed(tag: str) -> int:
    return sum(text in PROBES for text in fakebackend.CONTROLS[tag].seen)


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_round_measures_the_served_versions_and_recommends_the_fastest_that_agrees(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path, "every_requests = 4\nidle_ms = 0")) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["v1"].delay = 0.01  # v2 computes the same vectors, faster; far is fastest but another space
        for version in ("v1", "v2", "far"):
            client.encode(["load me"], f"m@{version}")
        assert inproc.daemon.periodic.rounds == 0
        client.encode(["the fourth request"], "m")
        _wait_rounds(inproc, 1)
        rows = {row["version"]: row for row in _history(inproc)}
        assert set(rows) == {"v1", "v2", "far"}  # cold is configured but not loaded: not loaded to be measured
        assert fakebackend.CONTROLS["cold"].loads == 0
        assert all(row["periodic"] is True and row["texts"] == 64 and len({r["round"] for r in rows.values()}) == 1 for row in rows.values())
        assert rows["v1"]["active"] is True and rows["v2"]["agreement"] == pytest.approx(1.0) and rows["far"]["agreement"] < 0.98
        assert rows["v2"]["texts_per_s"] > rows["v1"]["texts_per_s"]
        assert [v for v, row in rows.items() if row["recommended"]] == ["v2"]
        assert rows["v2"]["fingerprint"] == client.encode(["x"], "m@v2").fingerprint
        assert _probed("v1") >= 64 and client.ping()["pong"]
        assert client.status()["periodic_bench"]["rounds"] == 1
        metrics = client.metrics()
        assert f'hotswapd_bench_texts_per_second{{model="m",version="v2"}} {rows["v2"]["texts_per_s"]}' in metrics
        assert 'hotswapd_bench_recommended{model="m",version="v2"} 1.0' in metrics and 'hotswapd_bench_recommended{model="m",version="v1"} 0.0' in metrics
        assert 'hotswapd_bench_agreement{model="m",version="far"}' in metrics
        status = run_hs("status", endpoint=inproc.endpoint, env={"COLUMNS": "200"})
        assert b"periodic bench" in status.stdout and b"1 rounds, last " in status.stdout, status.stdout
        shown = run_hs("bench", "--history", env={"XDG_STATE_HOME": str(inproc.workdir / "state"), "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        # Piped: TSV whose version field is the version alone, the marker in its own column,
        # and the recommendation on stderr, off the table a script parses.
        lines = [line.split("\t") for line in shown.stdout.decode().splitlines()]
        assert lines[0][:3] == ["when", "version", "recommended"] and all(len(line) == len(lines[0]) for line in lines)
        assert [line[1] for line in lines if line[2] == "★"] == ["m@v2"] and any(line[3] == "periodic" for line in lines[1:])
        assert b"recommendation for m: v2" in shown.stderr and b"(hs switch m v2)" in shown.stderr


def test_a_round_waits_while_requests_keep_coming(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path, "every_requests = 1\nidle_ms = 300")) as inproc, inproc.client() as client:
        stop_at = time.monotonic() + 1.5
        while time.monotonic() < stop_at:  # a request every 50 ms: never 300 ms of quiet
            client.encode([f"live {time.monotonic()}"], "m")
            time.sleep(0.05)
        assert _probed("v1") == 0 and inproc.daemon.periodic.rounds == 0
        _wait_rounds(inproc, 1)  # quiet now: the round runs
        assert _probed("v1") >= 64


def test_load_true_measures_versions_not_loaded_and_named_versions_limit_the_round(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path, 'every_requests = 1\nidle_ms = 0\nload = true\nversions = ["m@cold", "m@v1"]')) as inproc, inproc.client() as client:
        client.encode(["go"], "m")
        _wait_rounds(inproc, 1)
        assert {row["version"] for row in _history(inproc)} == {"cold", "v1"}
        assert fakebackend.CONTROLS["cold"].loads == 1 and fakebackend.CONTROLS["v2"].loads == 0


def test_a_version_much_slower_than_its_recent_rounds_raises_an_alert(start: StartDaemon, tmp_path: Path) -> None:
    record = tmp_path / "alerts.jsonl"
    command = [sys.executable, "-c", f"import sys; open({str(record)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"]
    with start(_config(tmp_path, "every_requests = 2\nidle_ms = 0", extra=f"[alerts]\ncommand = {json.dumps(command)}\n")) as inproc, inproc.client() as client:
        client.encode(["a"], "m")
        client.encode(["b"], "m")
        _wait_rounds(inproc, 1)
        fakebackend.CONTROLS["v1"].delay = 0.02  # the same weights, suddenly much slower
        client.encode(["c"], "m")
        client.encode(["d"], "m")
        _wait_rounds(inproc, 2)
        first, second = _history(inproc)
        assert "regression" not in first and second["regression"] > 0.25
        deadline = time.monotonic() + 10
        while not (record.exists() and record.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the command creates the file, then writes its line
        alert = json.loads(record.read_text().splitlines()[0])
        assert alert["event"] == "bench_regression" and alert["model"] == "m" and alert["version"] == "v1"
        assert alert["baseline"] == pytest.approx(first["texts_per_s"], rel=0.01)


def test_stopping_the_daemon_ends_a_round_waiting_for_quiet(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path, "every_requests = 1\nidle_ms = 60000")) as inproc, inproc.client() as client:
        client.encode(["go"], "m")
        deadline = time.monotonic() + 5
        while not inproc.daemon.periodic._running.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        inproc.daemon.request_stop()
        stopped = threading.Event()
        threading.Thread(target=lambda: (inproc.daemon.workers.close(), stopped.set()), daemon=True).start()
        assert stopped.wait(10) and time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("section", "message"),
    [("every_seconds = 0", "greater than or equal to 1"), ('versions = ["m"]', "must be MODEL@VERSION"), ("max_share = 2", "less than or equal to 1"), ("every = 3", "unknown key"), ('versions = ["nope@v1"]', "bench.versions: nope@v1 is not a configured version")],
)
def test_bench_settings_are_checked(section: str, message: str) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(f"[bench]\n{section}\n"))


def test_a_version_unloaded_mid_round_is_left_out_and_closes_at_once(start: StartDaemon, tmp_path: Path) -> None:
    bench = 'every_requests = 2\nidle_ms = 0\nversions = ["m@v2", "m@v1"]'
    with start(_config(tmp_path, bench).replace("max_share = 1\n", "max_share = 0.002\n")) as inproc, inproc.client() as client:
        client.encode(["load"], "m@v1")
        fakebackend.CONTROLS["v2"].delay = 0.004  # each slice of v2 is followed by ~2 s of spacing
        client.encode(["load"], "m@v2")
        deadline = time.monotonic() + 10
        while _probed("v2") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _probed("v2") == 1
        inproc.daemon.registry.unload("m", "v2", "evict")
        deadline = time.monotonic() + 3
        while fakebackend.CONTROLS["v2"].closes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fakebackend.CONTROLS["v2"].closes == 1  # the round let go of it, without waiting out its spacing
        _wait_rounds(inproc, 1)
        assert [row["version"] for row in _history(inproc)] == ["v1"]


def test_an_ensemble_is_measured_like_any_version(start: StartDaemon, tmp_path: Path) -> None:
    extra = '[models.combo]\nactive = "e"\n[models.combo.versions.e]\nbackend = "ensemble"\nmembers = [{ model = "m", version = "v1" }, { model = "m", version = "far" }]\n'
    with start(_config(tmp_path, 'every_requests = 1\nidle_ms = 0\nversions = ["combo@e"]', extra=extra)) as inproc, inproc.client() as client:
        reply = client.encode(["go"], "combo")
        _wait_rounds(inproc, 1)
        (row,) = _history(inproc)
        assert row["version"] == "e" and row["fingerprint"] == reply.fingerprint and row["active"] and row["recommended"]
        assert _probed("v1") >= 64 and _probed("far") >= 64


def test_one_failing_version_costs_only_its_own_row_and_a_borrowed_version_is_unloaded_after(start: StartDaemon, tmp_path: Path) -> None:
    bench = 'every_requests = 2\nidle_ms = 0\nload = true\nversions = ["m@v1", "m@v2", "m@cold"]'
    with start(_config(tmp_path, bench)) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["v2"].fail_on = probe_set()[3]
        client.encode(["go"], "m@v2")
        client.encode(["go"], "m@v1")
        _wait_rounds(inproc, 1)
        assert [row["version"] for row in _history(inproc)] == ["v1", "cold"]
        assert fakebackend.CONTROLS["cold"].loads == 1 and inproc.daemon.registry.peek("m", "cold") is None  # loaded for the round only
        assert inproc.daemon.registry.peek("m", "v2") is not None  # it was loaded before the round: it stays


def test_a_round_over_its_time_still_records_what_it_measured_in_full(start: StartDaemon, tmp_path: Path) -> None:
    bench = 'every_requests = 1\nidle_ms = 0\nmax_round_seconds = 1\nversions = ["m@v1", "m@v2"]'
    with start(_config(tmp_path, bench)) as inproc, inproc.client() as client:
        client.encode(["load"], "m@v2")
        fakebackend.CONTROLS["v2"].delay = 0.3  # v2's 12 slices cannot fit in the second that is left
        client.encode(["go"], "m@v1")
        deadline = time.monotonic() + 15
        while inproc.daemon.periodic.last_problem is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "took over max_round_seconds (1 s)" in str(inproc.daemon.periodic.last_problem)
        assert [row["version"] for row in _history(inproc)] == ["v1"]


def test_a_stop_does_not_wait_for_a_slice_stuck_in_a_hung_model(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path, "every_requests = 1\nidle_ms = 0")) as inproc, inproc.client() as client:
        client.encode(["go"], "m")
        gate = threading.Event()
        fakebackend.CONTROLS["v1"].gate = gate  # the round's next slice hangs in the model
        fakebackend.CONTROLS["v1"].entered.clear()
        assert fakebackend.CONTROLS["v1"].entered.wait(10)
        inproc.daemon.request_stop()
        deadline = time.monotonic() + 3
        while inproc.daemon.periodic._running.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not inproc.daemon.periodic._running.is_set()  # the bench worker is free: the workers can close
        gate.set()


def test_a_hostile_history_file_is_read_safely(tmp_path: Path) -> None:
    from hotswapd.benchmarking import history

    path = tmp_path / "bench.jsonl"
    good = {"at": time.time(), "model": "m", "version": "v2", "texts_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "batch_size": 16, "concurrency": 1,
            "periodic": True, "round": "r1", "fingerprint": "f", "active": False, "recommended": True, "agreement": 0.99}
    lines = [json.dumps({**good, "agreement": "0.99"}), json.dumps({**good, "agreement": None}), json.dumps(good).replace("0.99", "1" + "0" * 400), json.dumps(good)]
    path.write_text("\n".join(lines))  # no newline at the end: a line cut short by a full disk
    active = {**good, "version": "v1", "round": "r2", "texts_per_s": 50.0, "active": True, "recommended": False, "agreement": 1.0}
    history.append(path, [active, {**good, "round": "r2", "agreement": "0.99"}])
    rows = history.read_history(path)
    assert [row["agreement"] for row in rows] == [None, None, None, 0.99, 1.0, None] and rows[-1]["round"] == "r2"
    assert history.read_history(path, tail_bytes=len(path.read_bytes()) // 3)[-1]["round"] == "r2"  # read from its end
    assert history.baseline(rows, {**good, "batch_size": 16}) == 100.0  # v2's rows alike
    assert history.baseline(rows, {**good, "batch_size": 1}) is None  # measured otherwise: no baseline
    state = tmp_path / "state"
    (state / "hotswapd").mkdir(parents=True)
    (state / "hotswapd" / "bench.jsonl").write_bytes(path.read_bytes())
    shown = run_hs("bench", "--history", env={"XDG_STATE_HOME": str(state), "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert b"recommendation for m: v2, 2.00x v1 at agreement - (hs switch m v2)" in shown.stderr


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_hs_bench_shows_its_figures_when_the_history_cannot_be_written(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as inproc:
        env = {"XDG_STATE_HOME": str(inproc.workdir / "state")}
        (inproc.workdir / "state" / "hotswapd" / "bench.jsonl").mkdir(parents=True)
        done = run_hs("bench", "m", "--duration", "0.5", "--concurrency", "1", "--json", endpoint=inproc.endpoint, env=env)
        assert done.returncode == 1 and json.loads(done.stdout)[0]["version"] == "v1"
        assert done.stderr.decode().startswith("hs: error: measured, but cannot record the run in ") and done.stderr.count(b"\n") == 1


def test_an_ensemble_of_remote_members_is_measured_only_when_named(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hotswapd.benchmarking import periodic

    monkeypatch.setattr(periodic, "REMOTE", frozenset({"fake"}))  # stand-in: each call would be a paid request
    extra = '[models.combo]\nactive = "e"\n[models.combo.versions.e]\nbackend = "ensemble"\nmembers = [{ model = "m", version = "v1" }]\n'
    with start(_config(tmp_path, "every_seconds = 3600", extra=extra)) as inproc, inproc.client() as client:
        client.encode(["x"], "combo")
        assert inproc.daemon.periodic.targets() == []
        inproc.daemon.periodic.reconfigure(inproc.daemon.periodic._settings.model_copy(update={"versions": ["combo@e"]}))
        assert inproc.daemon.periodic.targets() == [("combo", "e")]


def _loaded_versions(inproc: InprocDaemon) -> set[tuple[str, str]]:
    return {(item.model, item.version) for item in inproc.daemon.registry.loaded()}


@pytest.mark.parametrize("meanwhile", ["made active", "used by a request"])
def test_a_borrowed_version_live_traffic_came_to_use_stays_loaded(start: StartDaemon, tmp_path: Path, meanwhile: str) -> None:
    with start(_config(tmp_path, 'every_requests = 1\nidle_ms = 0\nload = true\nversions = ["m@cold"]')) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["cold"].delay = 0.1
        client.encode(["x"], "m@v1")
        assert fakebackend.CONTROLS["cold"].entered.wait(10)  # the round loaded cold and measures it
        if meanwhile == "made active":
            client.switch("m", "cold", force=True)
        else:
            client.encode(["live"], "m@cold")
        fakebackend.CONTROLS["cold"].delay = 0
        _wait_rounds(inproc, 1)
        assert ("m", "cold") in _loaded_versions(inproc)


def test_load_true_on_an_ensemble_unloads_the_members_it_loaded(start: StartDaemon, tmp_path: Path) -> None:
    extra = '[models.combo]\nactive = "e"\n[models.combo.versions.e]\nbackend = "ensemble"\nmembers = [{ model = "m", version = "v2" }, { model = "m", version = "far" }]\n'
    with start(_config(tmp_path, 'every_requests = 1\nidle_ms = 0\nload = true\nversions = ["combo@e"]', extra=extra)) as inproc, inproc.client() as client:
        client.encode(["x"], "m@v1")
        _wait_rounds(inproc, 1)
        assert [row["version"] for row in _history(inproc)] == ["e"]
        assert _loaded_versions(inproc) == {("m", "v1")}


def test_a_round_waiting_for_quiet_holds_no_memory(start: StartDaemon, tmp_path: Path) -> None:
    text = fake_config(tmp_path, {"v1": {"ram_gb": 0.6}, "v3": {"ram_gb": 0.6}}, extra="[bench]\nevery_requests = 1\nidle_ms = 5000\n[memory]\nmax_gb = 1.0\n")
    with start(text) as inproc, inproc.client() as client:
        client.encode(["x"], "m@v1")
        deadline = time.monotonic() + 5
        while not inproc.daemon.periodic._running.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inproc.daemon.periodic._running.is_set()
        assert client.encode(["y"], "m@v3").version == "v3"  # v1, measured by nobody right now, made room


def test_a_round_measures_with_the_batch_size_it_records(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}}, extra="[bench]\nmax_share = 1\nevery_requests = 1\nidle_ms = 0\nbatch_size = 16\n")
    with start(config) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["v1"].delay = 0.05
        client.encode(["x"], "m@v1")
        deadline = time.monotonic() + 5
        while _probed("v1") == 0 and time.monotonic() < deadline:  # the round has begun
            time.sleep(0.005)
        inproc.rewrite_config(config.replace("batch_size = 16", "batch_size = 64"))
        fakebackend.CONTROLS["v1"].delay = 0
        _wait_rounds(inproc, 1)
        (row,) = _history(inproc)
        # The live request, 8 single texts, then 64 probe texts in batches of 16 (not one of 64).
        assert row["batch_size"] == 16 and fakebackend.CONTROLS["v1"].encodes == 1 + 8 + 4


def test_names_that_are_not_names_never_reach_the_terminal(tmp_path: Path) -> None:
    from hotswapd.benchmarking import history

    good = {"at": time.time(), "model": "m", "version": "v2", "texts_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "batch_size": 16, "concurrency": 1}
    path = tmp_path / "bench.jsonl"
    history.append(path, [{**good, "model": "m\x1b]0;pwned\x07\x1b[2J"}, {**good, "version": "v2\x1b[31m\nforged line"}, good])
    assert [(row["model"], row["version"]) for row in history.read_history(path)] == [("m", "v2")]


def test_a_version_that_refuses_long_requests_is_still_measured(start: StartDaemon, tmp_path: Path) -> None:
    """Before: each slice ran the pipeline with the version's own long_text, so a version
    with long_text = "error" refused the probe set's passages and was left out of every
    round, silently. The daemon's own probes cut long texts instead."""
    config = fake_config(
        tmp_path, {"v1": {"dim": 16, "max_tokens": 20, "long_text": "error"}},
        extra="[bench]\nmax_share = 1\nevery_requests = 1\nidle_ms = 0\n",
    )
    with start(config) as inproc, inproc.client() as client:
        client.encode(["go"], "m")
        _wait_rounds(inproc, 1)
        assert {row["version"] for row in _history(inproc)} == {"v1"}

