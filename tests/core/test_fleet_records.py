"""What a fleet member reads from etcd is hostile bytes (issue 31): records that do not
parse are ignored, never trusted; [fleet] refuses what would leak or misroute; a gradual
rollout's next step is computed the same way by whichever member makes it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hotswapd.config.fleet_section import FleetConfig
from hotswapd.core.rollout import Route
from hotswapd.fleet.etcd_store import Entry, prefix_end
from hotswapd.fleet.member import next_step
from hotswapd.fleet.state import Desired, FleetKeys, FleetRollout, FleetView

KEYS = FleetKeys("t")


def entry(key: str, value: bytes | dict, revision: int = 5) -> Entry:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Entry(KEYS.root + key, raw, revision, 1, 42 if key.startswith("members/") else 0)  # members live under a lease


def test_records_that_do_not_parse_are_ignored_and_a_damaged_states_revision_is_kept() -> None:
    good = {"active": "v2", "previous": "v1"}
    view = FleetView(KEYS, 9, [
        entry("desired/m", good, 7),
        entry("desired/broken", b"\xff not json", 8),
        entry("desired/list", b"[1, 2]", 6),
        entry("desired/nan", b'{"active": "v1", "rollout": {"source": "v1", "target": "v2", "strategy": "canary", "share": NaN}}', 4),
        entry("desired/share", {"active": "v1", "rollout": {"source": "v1", "target": "v2", "strategy": "canary", "share": 250}}, 3),
        entry("desired/big", b'{"active": "' + b"x" * (2 << 20) + b'"}', 2),
        entry("members/a", {"member": "a", "generation": 7}),
        entry("members/b", {"member": "somebody-else", "generation": 7}),  # a report under another's name
        entry("ready/p1/a", {"fingerprint": "f"}),
        entry("ready/p1/a/extra", {"fingerprint": "f"}),
        entry("proposals/m", {"id": "p1", "model": "m", "version": "v2", "fingerprint": "f", "by": "a", "deadline": 1e12}),
        entry("unhealthy/m/v2/a", {"reason": "r" * 5000}),
        entry("elsewhere", {"x": 1}),
    ])
    assert set(view.desired) == {"m"} and view.desired["m"] == (Desired(**good), 7)
    assert view.revisions == {"m": 7, "broken": 8, "list": 6, "nan": 4, "share": 3, "big": 2}  # the next change replaces them
    assert set(view.members) == {"a"} and view.ready == {"p1": {"a": view.ready["p1"]["a"]}}
    assert view.proposals["m"][0].version == "v2" and len(view.unhealthy[("m", "v2")]["a"]) == 500
    assert view.generation == 7


def test_a_desired_state_routes_and_compares_like_the_route_it_makes() -> None:
    canary = Desired(active="v1", rollout=FleetRollout(source="v1", target="v2", strategy="canary", share=10, sticky=True))
    route = canary.route()
    assert route.active == "v1" and route.rollout is not None and (route.rollout.share, route.rollout.sticky) == (10, True)
    assert route.rollout.step_seconds is None and route.rollout.step_requests is None  # never stepped by one member's clock
    assert canary.same_as(route) and not canary.same_as(Route(active="v1")) and canary.serving() == ["v1", "v2"]


def test_a_gradual_rollouts_next_step_and_its_completion() -> None:
    gradual = Desired(active="v1", rollout=FleetRollout(source="v1", target="v2", strategy="gradual", share=10, steps=[10, 50, 100], step_seconds=5))
    step = next_step(gradual, "b", 100.0)
    assert step.rollout is not None and (step.rollout.share, step.rollout.step_started_at, step.change, step.by) == (50, 100.0, "rollout_step", "b")
    done = next_step(step, "c", 200.0)
    assert (done.active, done.previous, done.rollout, done.change) == ("v2", "v1", None, "rollout_complete")


@pytest.mark.parametrize("fleet", [
    {"name": "t", "etcd": []},
    {"name": "../t", "etcd": ["http://127.0.0.1:2379"]},
    {"name": "t", "etcd": ["http://user:secret@127.0.0.1:2379"]},  # a password in a URL ends up in logs
    {"name": "t", "etcd": ["ftp://127.0.0.1:2379"]},
    {"name": "t", "etcd": ["http://127.0.0.1:99999"]},
    {"name": "t", "etcd": ["http://127.0.0.1:2379/v3"]},
    {"name": "t", "etcd": ["http://127.0.0.1:2379"], "cert_file": "c.pem"},
    {"name": "t", "etcd": ["http://127.0.0.1:2379"], "username": "root"},
    {"name": "t", "etcd": ["http://127.0.0.1:2379"], "member": "a/b"},
    {"name": "t", "etcd": ["http://127.0.0.1:2379"], "unhealthy_share": 1.0},
    {"name": "t", "etcd": ["http://127.0.0.1:2379"], "password": "inline"},
])
def test_fleet_config_refuses_what_would_leak_or_misroute(fleet: dict) -> None:
    with pytest.raises(ValidationError):
        FleetConfig.model_validate(fleet)


def test_a_prefix_range_ends_just_past_the_prefix() -> None:
    assert prefix_end("/hotswap/fleets/t/") == "/hotswap/fleets/t0"


def test_deep_nesting_unleased_members_and_misshapen_reports_are_ignored() -> None:
    deep = Entry(KEYS.root + "notes/x", b"[" * 200_000, 3, 1, 0)
    assert deep.json() is None  # RecursionError, caught
    view = FleetView(KEYS, 9, [
        deep,
        Entry(KEYS.root + "members/ghost", json.dumps({"member": "ghost"}).encode(), 4, 4, 0),  # no lease
        Entry(KEYS.root + "members/odd", json.dumps({"member": "odd", "serving": {"m": {"fingerprints": ["x"]}}}).encode(), 5, 5, 77),
        Entry(KEYS.root + "members/ok", json.dumps({"member": "ok", "serving": {"m": {"active": "v1"}}}).encode(), 6, 6, 78),
        Entry(KEYS.root + "proposals/m", b"\xff", 7, 7, 0),
    ])
    assert set(view.members) == {"ok"} and view.members["ok"].serving["m"].active == "v1"
    assert view.proposals == {} and view.proposal_revisions == {"m": 7}  # replaceable by the next switch


def test_member_names_hold_no_newline_and_a_host_name_is_made_one() -> None:
    from hotswapd.config.fleet_section import host_member_name

    for bad in ({"member": "abc\n"}, {"name": "t\n"}, {"etcd": ["http://127.0.0.1:0"]}):
        with pytest.raises(ValidationError):
            FleetConfig.model_validate({"name": "t", "etcd": ["http://127.0.0.1:2379"], **bad})
    assert host_member_name("bad/host name.example.com") == "bad-host-name"
    assert host_member_name("...") == "member"


def test_a_heartbeat_built_before_an_apply_never_lands_after_the_applys_report() -> None:
    """Before: the lease thread's heartbeat, built just before an apply, could be written just
    after the apply's own report; a switch then waited a whole heartbeat (1 s in the bench's
    p99) for a member that already served it. The race is forced: the heartbeat's write is
    held until the apply has reported."""
    import threading
    from types import SimpleNamespace

    from hotswapd.config.schema import Config
    from hotswapd.core.snapshot import Published
    from hotswapd.fleet.member import FleetMember

    written: list[dict] = []
    heartbeat_writing, release = threading.Event(), threading.Event()

    class Store:
        def put(self, key: str, value: dict, lease: int = 0) -> int:
            if threading.current_thread().name == "heartbeat":  # its write is held
                heartbeat_writing.set()
                release.wait(5)
            written.append(value)
            return 1

    config = FleetConfig(name="t", etcd=["http://127.0.0.1:2379"], member="a")
    registry = SimpleNamespace(published=Published(Config()))
    member = FleetMember(config, Store(), registry, switchboard=None)  # type: ignore[arg-type]
    member.lease = 7
    heartbeat = threading.Thread(target=member.report, name="heartbeat")
    heartbeat.start()
    assert heartbeat_writing.wait(5)
    member.applied["m"] = 15  # the apply, while the heartbeat's write is in flight
    applying = threading.Thread(target=member.report)
    applying.start()
    applying.join(0.3)
    release.set()
    for thread in (heartbeat, applying):
        thread.join(5)
    assert written[-1]["applied"] == {"m": 15}
