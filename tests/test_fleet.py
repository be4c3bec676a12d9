"""Fleets against a real etcd (issue 31): three member daemons in their own processes (the
fake backend: no torch), a switch that commits only when every live member is ready with
the same fingerprint, refusals named, kill -9 during a switch, etcd stopped and started
under traffic, a member partitioned from etcd and healed, sticky keys, fleet rollback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hotswapd.errors import FleetRefused, FleetUnavailable, HotswapError
from tests.conftest import run_hs
from tests.daemons import RunningDaemon
from tests.fleets import Etcd, Proxy, etcd_server, kill9, member_config, start_member, wait_for

pytestmark = pytest.mark.slow
VERSIONS: dict[str, dict[str, object]] = {"v1": {}, "v2": {"scale": 2.0}, "v3": {"scale": 3.0}}


@pytest.fixture()
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    with etcd_server(tmp_path) as server:
        yield server


def start_fleet(tmp_path: Path, etcd_url: str, names: tuple[str, ...] = ("a", "b", "c"), versions: dict[str, dict[str, object]] | None = None,
                per_member: dict[str, dict[str, dict[str, object]]] | None = None, fleet_extra: str = "", extra: str = "",
                env: dict[str, dict[str, str]] | None = None) -> dict[str, RunningDaemon]:
    members = {}
    for name in names:
        own = (per_member or {}).get(name, versions or VERSIONS)
        text = member_config(tmp_path, "t", name, etcd_url, own, fleet_extra=fleet_extra) + extra
        members[name] = start_member(tmp_path, name, text, env=(env or {}).get(name))
    for daemon in members.values():
        with daemon.client() as client:
            wait_for(lambda: client.status()["phase"] == "ready" and client.fleet()["state"] == "connected", 30, "a member joined")
    with next(iter(members.values())).client() as client:
        wait_for(lambda: len(client.fleet()["members"]) == len(names), 30, "every member in etcd")
    return members


def stop_all(members: dict[str, RunningDaemon]) -> None:
    for daemon in members.values():
        if daemon.process.poll() is None:
            daemon.stop()


def versions_seen(members: dict[str, RunningDaemon], key: str | None = None) -> dict[str, tuple[str, int | None]]:
    seen = {}
    for name, daemon in members.items():
        with daemon.client() as client:
            result = client.encode(["hello"], "m", key=key)
            seen[name] = (result.version, result.generation)
    return seen


def test_a_switch_commits_on_every_member_together_and_replies_carry_its_generation(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url, extra='[http]\nlisten = "127.0.0.1:0"\n')
    try:
        done = run_hs("switch", "m", "v2", endpoint=members["b"].endpoint)
        assert done.returncode == 0, done.stderr.decode()
        with members["b"].client() as client:
            switched = client.switch("m", "v2")  # already committed: unchanged, at its generation
            url = str(client.status()["http"])
        assert switched["outcome"] == "unchanged" and switched["generation"] > 0
        # read-your-writes across the fleet: the reply came after every member serves it
        seen = versions_seen(members)
        assert {version for version, _ in seen.values()} == {"v2"}
        assert {generation for _, generation in seen.values()} == {switched["generation"]}
        with members["c"].client() as client:
            status = client.fleet()
            history = client.history("m")
        assert status["models"]["m"]["active"] == "v2" and status["models"]["m"]["by"] == "b"
        assert all(member["lag"] == 0 and member["generation"] == switched["generation"] for member in status["members"])
        table = run_hs("fleet", "status", endpoint=members["c"].endpoint)
        assert table.returncode == 0, table.stderr.decode()
        lines = [line.split("\t") for line in table.stdout.decode().splitlines()]
        assert lines[0][:4] == ["member", "generation", "lag", "serving"]
        assert [(row[0], row[1], row[2], row[3]) for row in lines[1:]] == [(name, str(switched["generation"]), "0", "m@v2") for name in ("a", "b", "c")]
        answer = httpx.post(f"{url}/v1/embeddings", json={"model": "m", "input": "hello"}, timeout=30)
        assert answer.status_code == 200 and answer.headers["X-Hotswap-Generation"] == str(switched["generation"])
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["status"] == "ready" and health["fleet"]["state"] == "connected" and health["fleet"]["generation"] == switched["generation"]
        with members["b"].client() as client:
            scraped = client.metrics()
        assert 'hotswapd_fleet_connected{fleet="t",member="b"} 1.0' in scraped and f'hotswapd_fleet_generation{{fleet="t",member="b"}} {float(switched["generation"])}' in scraped
        fleet_entry = history[-1]
        assert fleet_entry["trigger"] == "fleet" and fleet_entry["by"] == "b" and fleet_entry["to"] == "v2" and fleet_entry["generation"] == switched["generation"]
        with members["a"].client() as client:
            rolled = client.rollback("m")
        assert rolled["to"] == "v1" and rolled["generation"] > switched["generation"]
        assert {version for version, _ in versions_seen(members).values()} == {"v1"}
    finally:
        stop_all(members)


def test_a_member_that_cannot_load_the_target_or_has_other_files_blocks_the_commit_named(tmp_path: Path, etcd: Etcd) -> None:
    broken = {**VERSIONS, "v2": {"scale": 2.0, "fail_load": "no such weights"}}
    other_files = {**VERSIONS, "v3": {"scale": 3.0, "own_files": True}}
    members = start_fleet(tmp_path, etcd.url, per_member={"a": VERSIONS, "b": broken, "c": other_files})
    try:
        with members["a"].client() as client:
            with pytest.raises(FleetRefused, match=r"member b refused: b cannot serve m@v2"):
                client.switch("m", "v2")
            with pytest.raises(FleetRefused, match=r"member c (refused|serves fingerprint).*files differ"):
                client.switch("m", "v3")
            assert client.fleet()["proposals"] == []
        # nothing flipped anywhere
        assert {version for version, _ in versions_seen(members).values()} == {"v1"}
    finally:
        stop_all(members)


def test_a_member_killed_during_a_switch_is_not_waited_for(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url, env={"c": {"HOTSWAP_FAKE_SLOW_LOAD": "v2:60"}})
    try:
        answer: dict[str, object] = {}

        def switch() -> None:
            with members["a"].client(timeout=120) as client:
                answer["result"] = client.switch("m", "v2")

        thread = threading.Thread(target=switch)
        thread.start()
        with members["a"].client() as client:
            wait_for(lambda: client.fleet()["proposals"] and client.fleet()["proposals"][0]["waiting"] == ["c"], 20, "c the last to be ready")
        started = time.monotonic()
        kill9(members["c"])
        thread.join(60)
        assert answer["result"]["members"] == ["a", "b"]  # type: ignore[index]
        assert time.monotonic() - started < 3 * 3 + 5  # the lease (3 s) ran out, not the switch's deadline
        live = {name: daemon for name, daemon in members.items() if name != "c"}
        assert {version for version, _ in versions_seen(live).values()} == {"v2"}
    finally:
        stop_all(members)


def test_sticky_keys_land_on_the_same_version_on_every_member(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url)
    try:
        with members["a"].client() as client:
            started = client.switch("m", "v2", "canary", share=50.0, sticky=True)
        assert started["outcome"] == "started"
        for index in range(40):
            seen = versions_seen(members, key=f"user-{index}")
            assert len({version for version, _ in seen.values()}) == 1, seen
        with members["b"].client() as client:
            client.switch("m", "v2")  # promote
        assert {version for version, _ in versions_seen(members).values()} == {"v2"}
    finally:
        stop_all(members)


def test_etcd_stopped_under_traffic_serving_goes_on_switches_fail_clearly_then_converge(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url)
    failures: list[str] = []
    stop = threading.Event()

    def traffic(daemon: RunningDaemon) -> None:
        with daemon.client() as client:
            while not stop.is_set():
                try:
                    client.encode(["hello"], "m")
                except HotswapError as exc:
                    failures.append(exc.message)

    threads = [threading.Thread(target=traffic, args=(daemon,)) for daemon in members.values()]
    for thread in threads:
        thread.start()
    try:
        etcd.stop()
        with members["a"].client() as client:
            wait_for(lambda: client.fleet()["state"] == "degraded", 15, "a degraded")
            status = client.status()
            assert status["fleet"]["state"] == "degraded" and status["fleet"]["degraded_since"]
            shown = run_hs("status", endpoint=members["a"].endpoint).stdout.decode()
            assert "fleet\tt as a, generation" in shown and "degraded for" in shown and "serving its last committed state" in shown
            with pytest.raises(FleetUnavailable, match="refuses fleet changes until it reconnects"):
                client.switch("m", "v2")
        etcd.start()
        with members["a"].client() as client:
            wait_for(lambda: client.fleet()["state"] == "connected", 30, "a connected again")
            wait_for(lambda: len(client.fleet()["members"]) == 3, 30, "every member back")
            client.switch("m", "v2")
        assert {version for version, _ in versions_seen(members).values()} == {"v2"}
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        stop_all(members)
    assert failures == []


def test_a_member_partitioned_from_etcd_keeps_serving_refuses_changes_and_converges_when_healed(tmp_path: Path, etcd: Etcd) -> None:
    proxy = Proxy(etcd.port)
    members = {name: start_member(tmp_path, name, member_config(tmp_path, "t", name, proxy.url if name == "c" else etcd.url, VERSIONS)) for name in ("a", "b", "c")}
    try:
        with members["a"].client() as client:
            wait_for(lambda: len(client.fleet()["members"]) == 3, 30, "every member in etcd")
        proxy.cut()
        with members["c"].client() as client:
            wait_for(lambda: client.fleet()["state"] == "degraded", 15, "c degraded")
            with pytest.raises(FleetUnavailable):
                client.switch("m", "v2")
        with members["a"].client() as client:
            wait_for(lambda: len(client.fleet()["members"]) == 2, 15, "c's lease gone")
            switched = client.switch("m", "v2")
        assert switched["members"] == ["a", "b"]
        assert versions_seen({"c": members["c"]})["c"][0] == "v1"  # its last committed state
        proxy.heal()
        with members["c"].client() as client:
            wait_for(lambda: client.encode(["x"], "m").version == "v2", 30, "c converged")
            assert client.encode(["x"], "m").generation == switched["generation"]
    finally:
        stop_all(members)
        proxy.cut()


def test_the_fleet_rolls_back_together_when_a_member_reports_the_target_unhealthy(tmp_path: Path, etcd: Etcd) -> None:
    health = "[models.m.health]\nmin_requests = 5\nmax_error_rate = 0.2\nwindow_seconds = 30\n"
    members = start_fleet(tmp_path, etcd.url, extra=health, env={"c": {"HOTSWAP_FAKE_FAIL_ON": "v2:x"}})
    try:
        with members["a"].client() as client:
            client.switch("m", "v2", "canary", share=100.0)
        with members["c"].client() as client:
            for _ in range(10):
                try:
                    client.encode(["x"], "m")
                except HotswapError:
                    pass
        for daemon in members.values():
            with daemon.client() as client:
                wait_for(lambda: client.encode(["x"], "m").version == "v1", 20, "the fleet rolled back")
        with members["a"].client() as client:
            state = client.fleet()["models"]["m"]
        assert state["change"] == "auto_rollback" and "1 of 3 members report v2 unhealthy (c:" in state["reason"]
    finally:
        stop_all(members)


def test_a_gradual_rollout_steps_by_time_for_the_whole_fleet_and_a_damaged_record_is_replaced(tmp_path: Path, etcd: Etcd) -> None:
    import base64

    members = start_fleet(tmp_path, etcd.url, names=("a", "b"))
    try:
        # Anything may write etcd: a record that does not parse is ignored, and the next change replaces it.
        key = base64.b64encode(b"/hotswap/fleets/t/desired/m").decode()
        httpx.post(f"{etcd.url}/v3/kv/put", json={"key": key, "value": base64.b64encode(b"\xff not json").decode()}, timeout=10).raise_for_status()
        assert {version for version, _ in versions_seen(members).values()} == {"v1"}
        with members["a"].client() as client:
            started = client.switch("m", "v2", "gradual", steps=[30.0, 60.0], step_seconds=1.0)
            assert started["outcome"] == "started"
            wait_for(lambda: client.fleet()["models"]["m"]["change"] == "rollout_step", 10, "the second step")
            wait_for(lambda: client.fleet()["models"]["m"]["change"] == "rollout_complete", 10, "the rollout complete")
            state = client.fleet()["models"]["m"]
        assert state["active"] == "v2" and state["rollout"] is None and state["previous"] == "v1"
        recorded = []
        for daemon in members.values():
            with daemon.client() as client:
                wait_for(lambda: client.encode(["x"], "m").version == "v2", 10, "every member on v2")
                recorded.append([entry["event"] for entry in client.history("m") if entry.get("trigger") == "fleet"])
        # Each member ends on the completion; one that was busy may have gone straight past a step.
        assert all(events[-1] == "rollout_complete" and events[0] == "switch" for events in recorded)
        assert any(events[-3:] == ["switch", "rollout_step", "rollout_complete"] for events in recorded)
    finally:
        stop_all(members)


def test_a_members_file_changing_active_does_not_move_the_fleet(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url, names=("a", "b"))
    try:
        with members["a"].client() as client:
            client.switch("m", "v2")
        config = members["b"].config_path
        config.write_text(config.read_text().replace('active = "v1"', 'active = "v3"'))
        with members["b"].client() as client:
            reloaded = client.reload_config()
            assert reloaded["applied"] is True
            time.sleep(1.5)  # a member reconciles at least every second
        assert {version for version, _ in versions_seen(members).values()} == {"v2"}
    finally:
        stop_all(members)


def test_a_second_daemon_with_a_members_name_is_refused_and_says_why(tmp_path: Path, etcd: Etcd) -> None:
    members = start_fleet(tmp_path, etcd.url, names=("a",))
    twin = start_member(tmp_path / "twin", "a", member_config(tmp_path, "t", "a", etcd.url, VERSIONS))
    try:
        with twin.client() as client:
            wait_for(lambda: "held by another live daemon" in (client.fleet()["error"] or ""), 15, "the twin refused")
            assert client.status()["fleet"]["state"] == "degraded"
            with pytest.raises(FleetUnavailable):
                client.switch("m", "v2")
        with members["a"].client() as client:
            assert client.switch("m", "v2")["members"] == ["a"]
    finally:
        twin.stop()
        stop_all(members)


def test_members_authenticate_to_etcd_with_a_password_file_and_a_wrong_one_is_named(tmp_path: Path, etcd: Etcd) -> None:
    def gateway(path: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
        answer = httpx.post(f"{etcd.url}/v3/{path}", json=body, headers={"Authorization": token} if token else {}, timeout=10)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    gateway("auth/user/add", {"name": "root", "password": "s3cret"})
    gateway("auth/role/add", {"name": "root"})
    gateway("auth/user/grant", {"user": "root", "role": "root"})
    gateway("auth/enable", {})
    assert httpx.post(f"{etcd.url}/v3/kv/range", json={"key": "eA=="}, timeout=10).status_code != 200  # auth is on
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "good").write_text("s3cret\n")
    (secrets / "bad").write_text("wrong\n")
    for name in ("good", "bad"):
        (secrets / name).chmod(0o600)
    members = {}
    try:
        for name, secret in (("a", "good"), ("b", "good"), ("c", "bad")):
            fleet_extra = f'username = "root"\npassword_file = "{secrets / secret}"'
            members[name] = start_member(tmp_path, name, member_config(tmp_path, "t", name, etcd.url, VERSIONS, fleet_extra=fleet_extra))
        with members["c"].client() as client:
            wait_for(lambda: "authentication failed" in (client.fleet()["error"] or ""), 15, "c refused by etcd")
        with members["a"].client() as client:
            wait_for(lambda: len(client.fleet()["members"]) == 2, 15, "a and b joined")
            assert client.switch("m", "v2")["members"] == ["a", "b"]
    finally:
        stop_all(members)


def test_hostile_records_and_left_over_proposals_neither_block_switches_nor_break_status(tmp_path: Path, etcd: Etcd) -> None:
    """Before: a value nested 100,000 deep stopped every member's reconcile and turned switches
    into InternalError; a proposal left by a gone member (or not parsing) refused every later
    switch; a member record written without a lease was waited for at every switch; a report
    of the wrong shape crashed `hs fleet status`."""
    import base64
    import json as json_module

    def put(key: str, value: bytes) -> None:
        body = {"key": base64.b64encode(f"/hotswap/fleets/t/{key}".encode()).decode(), "value": base64.b64encode(value).decode()}
        httpx.post(f"{etcd.url}/v3/kv/put", json=body, timeout=10).raise_for_status()

    members = start_fleet(tmp_path, etcd.url, names=("a", "b"), fleet_extra="switch_timeout_seconds = 20")
    try:
        put("notes/deep", b"[" * 100_000)
        put("desired/other", b'{"a":' * 100_000)
        put("members/ghost", json_module.dumps({"member": "ghost", "generation": 1}).encode())  # no lease
        put("members/odd", json_module.dumps({"member": "odd", "serving": {"m": {"fingerprints": ["x"]}}}).encode())
        gone = {"id": "p0", "model": "m", "version": "v3", "fingerprint": "f", "by": "zz", "deadline": time.time() + 3600}
        put("proposals/m", json_module.dumps(gone).encode())
        put("ready/p0/a", json_module.dumps({"refused": "stale"}).encode())
        with members["a"].client() as client:
            switched = client.switch("m", "v2")
        assert switched["members"] == ["a", "b"]
        put("proposals/m", b"\xff not a proposal")
        with members["b"].client() as client:
            assert client.switch("m", "v3")["members"] == ["a", "b"]
        status = run_hs("fleet", "status", endpoint=members["a"].endpoint)
        assert status.returncode == 0 and "ghost" not in status.stdout.decode(), status.stderr.decode()
        assert {version for version, _ in versions_seen(members).values()} == {"v3"}
    finally:
        stop_all(members)


def test_a_member_whose_clock_is_ahead_still_answers_and_steps_no_early(tmp_path: Path, etcd: Etcd) -> None:
    """Before: a member 60 s ahead took every other member's proposal for expired (the switch
    failed naming it), and stepped a 30-second gradual rollout within 3 s."""
    from tests.daemons import REPO

    skewed = {"PYTHONPATH": str(REPO / "tests" / "skewed_clock"), "HOTSWAP_TEST_CLOCK_SKEW": "60"}
    members = start_fleet(tmp_path, etcd.url, fleet_extra="switch_timeout_seconds = 10", env={"c": skewed})
    try:
        with members["c"].client() as client:
            assert client.status()["fleet"]["state"] == "connected"
        with members["a"].client() as client:
            assert client.switch("m", "v2")["members"] == ["a", "b", "c"]
            client.switch("m", "v3", "gradual", steps=[20.0, 60.0], step_seconds=30.0)
            time.sleep(4)
            state = client.fleet()["models"]["m"]
        assert state["change"] == "switch" and state["rollout"]["share"] == 20.0
    finally:
        stop_all(members)


def test_a_member_behind_a_link_that_froze_then_healed_answers_proposals_again(tmp_path: Path, etcd: Etcd) -> None:
    """Before: the member's loop opened its watch into the frozen link and waited for ever;
    healed, it looked connected but never answered a proposal again."""
    proxy = Proxy(etcd.port)
    fleet_extra = "switch_timeout_seconds = 20"
    members = {name: start_member(tmp_path, name, member_config(tmp_path, "t", name, proxy.url if name == "c" else etcd.url, VERSIONS, fleet_extra=fleet_extra))
               for name in ("a", "c")}
    try:
        with members["a"].client() as client:
            wait_for(lambda: len(client.fleet()["members"]) == 2, 30, "both in etcd")
        proxy.freeze()
        with members["c"].client() as client:
            wait_for(lambda: client.fleet()["state"] == "degraded", 20, "c degraded")
        time.sleep(3)
        proxy.thaw()
        with members["c"].client() as client:
            wait_for(lambda: client.fleet()["state"] == "connected", 30, "c connected")
        with members["a"].client() as client:
            wait_for(lambda: len(client.fleet()["members"]) == 2, 30, "c back in etcd")
            assert client.switch("m", "v2")["members"] == ["a", "c"]
    finally:
        stop_all(members)
        proxy.cut()
