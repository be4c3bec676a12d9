"""One published serving state (hotswapd.core.snapshot): a command that answers
"applied", "switched", "reloaded", "preloaded" or "evicted" has published what it changed,
so the very next request sees it (read-your-writes), and no reader ever sees half of a
change. Each check runs ROUNDS times: the defect it guards against was a window of a few
milliseconds that a single try mostly missed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from hotswapd.client.connection import Client
from hotswapd.errors import HotswapError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM, build_corpus, sentences, write_jsonl
from tests.daemons import wait_for
from tests.inproc import InprocDaemon, fake_config

if TYPE_CHECKING:
    from hotswapd.core.snapshot import Published, Snapshot

ROUNDS = 200


def _reload(daemon: InprocDaemon, client: Client, text: str) -> dict[str, object]:
    daemon.config_path.write_text(text)
    return client.reload_config()


def test_a_reload_that_changes_normalize_is_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    configs = {flag: fake_config(tmp_path, {"v1": {"normalize": flag}}) for flag in (True, False)}
    with start(configs[True]) as daemon, daemon.client() as client:
        for round_ in range(ROUNDS):
            flag = round_ % 2 == 1
            assert _reload(daemon, client, configs[flag])["failed"] == {}
            result = client.encode([f"text {round_}"], no_cache=True)
            norm = float(np.linalg.norm(result.embeddings[0]))
            assert (abs(norm - 1.0) < 1e-5) == flag, f"round {round_}: normalize={flag} but the norm is {norm}"


def test_a_reload_that_changes_prompts_is_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    prefixes = ["query: ", "passage: "]
    configs = [fake_config(tmp_path, {"v1": {}}).replace('tag = "v1"', f'tag = "v1"\nprompts = {{ q = "{prefix}" }}') for prefix in prefixes]
    with start(configs[0]) as daemon, daemon.client() as client:
        for round_ in range(ROUNDS):
            prefix = prefixes[round_ % 2]
            _reload(daemon, client, configs[round_ % 2])
            client.encode([f"text {round_}"], prompt="q", no_cache=True)
            assert fakebackend.CONTROLS["v1"].seen[-1] == f"{prefix}text {round_}", f"round {round_}"


def test_a_reload_that_changes_max_seq_length_is_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    configs = {limit: fake_config(tmp_path, {"v1": {"max_seq_length": limit}}) for limit in (4, 512)}
    long_text = "one two three four five six seven eight nine ten"
    with start(configs[512]) as daemon, daemon.client() as client:
        for round_ in range(ROUNDS):
            limit = 4 if round_ % 2 == 0 else 512
            _reload(daemon, client, configs[limit])
            header, _ = client.request("encode", payload=[f"{long_text} {round_}".encode()], options={"no_cache": True})
            assert header["truncated"] == (1 if limit == 4 else 0), f"round {round_}: max_seq_length {limit}"


def test_a_reload_that_changes_active_is_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    configs = {v: fake_config(tmp_path, {"v1": {}, "v2": {}}, active=v) for v in ("v1", "v2")}
    with start(configs["v1"]) as daemon, daemon.client() as client:
        for round_ in range(ROUNDS):
            target = "v2" if round_ % 2 == 0 else "v1"
            reply = _reload(daemon, client, configs[target])
            assert reply["switching"] == ["m"] and reply["failed"] == {}
            assert client.encode([f"text {round_}"]).version == target, f"round {round_}"


def test_a_reload_that_changes_embeddings_path_is_seen_by_the_next_search(start: StartDaemon, tmp_path: Path) -> None:
    """The defect as reported: after `hs config reload` said "config applied", the next
    searches were still scored against the previous corpus."""
    corpora = {"a": sentences(12, seed=1), "b": [f"other {text}" for text in sentences(12, seed=2)]}
    configs = {name: fake_config(tmp_path, {"v1": {"dim": DIM, "embeddings_path": str(tmp_path / f"corpus-{name}")}}) for name in corpora}
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        for name, texts in corpora.items():
            build_corpus(client, "m@v1", write_jsonl(tmp_path / f"{name}.jsonl", texts), tmp_path / f"corpus-{name}")
        for round_ in range(ROUNDS):
            name = "a" if round_ % 2 == 0 else "b"
            assert _reload(daemon, client, configs[name])["failed"] == {}
            hit = client.search(corpora[name][3], k=1)["results"][0][0]
            assert hit["text"] == corpora[name][3], f"round {round_}: scored against the other corpus"


def test_a_switch_and_a_rollback_are_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        for round_ in range(ROUNDS):
            client.switch("m", "v2")
            assert client.encode([f"after switch {round_}"]).version == "v2", f"round {round_}"
            client.rollback("m")
            assert client.encode([f"after rollback {round_}"]).version == "v1", f"round {round_}"


def test_a_preload_and_an_evict_are_seen_by_the_next_request(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        control = fakebackend.CONTROLS["v2"]
        for round_ in range(ROUNDS):
            client.preload("m@v2")
            loads = control.loads
            assert "m@v2" in client.status()["loaded"], f"round {round_}"
            client.encode([f"preloaded {round_}"], "m@v2")
            assert control.loads == loads, f"round {round_}: the request after the preload loaded again"
            assert "v2" in client.evict("m")["evicted"], f"round {round_}"
            models = client.models()[0]
            assert models["loaded_versions"] == [], f"round {round_}: {models['loaded_versions']}"
            client.encode([f"evicted {round_}"], "m@v2")
            assert control.loads == loads + 1, f"round {round_}: the request after the evict was served by the evicted copy"


def _consistent(snap: Snapshot) -> list[str]:
    """What would be a half-applied change in one snapshot."""
    problems = []
    for name, route in snap.routes.items():
        model = snap.config.models.get(name)
        if model is None:
            problems.append(f"route for unconfigured model {name}")
            continue
        for version in route.serving():
            if version not in model.versions:
                problems.append(f"{name} routes to unconfigured {version}")
    problems += [f"{name} has no route" for name in snap.config.models if name not in snap.routes]
    for (name, version), loaded in snap.loaded.items():
        model = snap.config.models.get(name)
        if model is None or version not in model.versions:
            problems.append(f"{name}@{version} loaded but not configured")
        elif loaded.config != model.versions[version]:
            problems.append(f"{name}@{version} loaded with other options than configured")
    return problems


def test_every_published_snapshot_is_whole(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a reload updated the routes, then the registry; `hs models` and requests in
    between saw a new config beside old loaded versions (CI failed on it three times)."""
    from hotswapd.core.snapshot import Published
    seen: list[Snapshot] = []
    original = Published.publish

    def recording(self: Published, change: Callable[[Snapshot], Snapshot]) -> Snapshot:
        snap = original(self, change)
        seen.append(snap)
        return snap

    monkeypatch.setattr(Published, "publish", recording)
    two = fake_config(tmp_path, {"v1": {}, "v2": {}}) + fake_config(tmp_path, {"w1": {}}, model="other").split("\n", 1)[1]
    one = fake_config(tmp_path, {"v2": {"scale": 2.0}})
    with start(two) as daemon, daemon.client() as client:
        for round_ in range(20):
            client.encode(["x"], "m@v1")
            client.encode(["x"], "m@v2")
            client.encode(["x"], "other")
            _reload(daemon, client, one)
            assert [row["name"] for row in client.models()] == ["m"]
            _reload(daemon, client, two)
    assert len(seen) > 100
    problems = [(snap.generation, problem) for snap in seen for problem in _consistent(snap)]
    assert problems == []
    generations = [snap.generation for snap in seen]
    assert generations == sorted(generations) and len(set(generations)) == len(generations)


def test_requests_during_a_reload_are_served_whole_by_one_config(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a reload loads (before it publishes) requests are served by the running config;
    none falls into a gap between two halves (it got internal_error: KeyError), and once
    the reload answered, every request is served by the new one."""
    from hotswapd.core.registry import Registry

    loading, go_on = threading.Event(), threading.Event()
    original = Registry.prepare_config

    def slow(self: Registry, config: object) -> object:
        loading.set()
        go_on.wait(10)
        return original(self, config)  # type: ignore[arg-type]

    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as a:
        a.encode(["warm"])
        monkeypatch.setattr(Registry, "prepare_config", slow)
        answer: list[object] = []
        reloading = threading.Thread(target=lambda: answer.append(daemon.rewrite_config(fake_config(tmp_path, {"v2": {}}))))
        reloading.start()
        assert loading.wait(5)
        during = {a.encode([f"during {i}"]).version for i in range(10)}
        go_on.set()
        reloading.join(10)
        assert during == {"v1"} and answer and answer[0]["applied"]  # type: ignore[index]
        assert {a.encode([f"after {i}"]).version for i in range(10)} == {"v2"}


def test_a_config_that_fails_while_it_is_applied_leaves_the_running_one_whole(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a failure after the routes adopted a config (max_mb = 1e400 reached it) left
    new models served while the log said the running config stays."""
    import hotswapd.daemon.main as daemon_main

    old = fake_config(tmp_path, {"v1": {}})
    new = old + fake_config(tmp_path, {"w1": {}}, model="other").split("\n", 1)[1]
    with start(old) as inproc, inproc.client() as client:
        def broken(*args: object) -> None:
            raise OverflowError("cannot convert float infinity to integer")

        monkeypatch.setattr(daemon_main, "limits_from", broken)
        with pytest.raises(HotswapError):
            inproc.rewrite_config(new)
        assert [row["name"] for row in client.models()] == ["m"]
        with pytest.raises(HotswapError):
            client.encode(["x"], "other")


def test_a_failed_fresh_load_keeps_the_old_copy_and_says_so(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        first = client.encode(["x"], no_cache=True).embeddings[0]
        fakebackend.CONTROLS["v1"].fail_load = "weights are corrupt"
        reply = _reload(daemon, client, fake_config(tmp_path, {"v1": {"scale": 3.0}}))
        assert "weights are corrupt" in reply["failed"]["m@v1"]  # type: ignore[index]
        assert np.allclose(client.encode(["x"], no_cache=True).embeddings[0], first)  # the old copy serves


def test_a_switch_the_file_asks_for_that_failed_is_tried_again_on_the_next_reload(start: StartDaemon, tmp_path: Path) -> None:
    """Before: the file's `active` counted as applied even when the switch to it failed, so
    reloading the same file after fixing the cause changed nothing."""
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        client.encode(["x"])
        fakebackend.CONTROLS["v2"].fail_load = "disk on fire"
        moved = fake_config(tmp_path, {"v1": {}, "v2": {}}, active="v2")
        reply = _reload(daemon, client, moved)
        assert "disk on fire" in reply["failed"]["m"]  # type: ignore[index]
        assert client.encode(["x"]).version == "v1"
        fakebackend.CONTROLS["v2"].fail_load = None
        again = _reload(daemon, client, moved)  # the same file, its cause fixed
        assert again["failed"] == {} and again["switching"] == ["m"]
        assert client.encode(["x"]).version == "v2"


def test_a_manual_switch_after_a_failed_config_switch_survives_a_reload(start: StartDaemon, tmp_path: Path) -> None:
    """The retry of a failed config switch yields to whatever moved the model since: a
    reload that does not change `active` leaves a hand-made switch alone."""
    config = fake_config(tmp_path, {"v1": {}, "v2": {}, "v3": {}})
    with start(config) as inproc, inproc.client() as client:
        client.encode(["x"], "m")
        fakebackend.CONTROLS["v2"].fail_load = "weights are gone"
        asked_v2 = config.replace('active = "v1"', 'active = "v2"')
        reply = inproc.rewrite_config(asked_v2)
        assert "m" in reply["failed"]  # the file's switch failed; v1 keeps serving
        fakebackend.CONTROLS["v2"].fail_load = None
        client.switch("m", "v3")  # the operator chooses v3 by hand
        assert client.encode(["x"], "m").version == "v3"
        inproc.rewrite_config(asked_v2 + "\n")  # the same `active`; an unrelated reload
        assert client.encode(["x"], "m").version == "v3"


def test_a_nested_publish_is_refused_not_deadlocked() -> None:
    from hotswapd.config.schema import Config
    from hotswapd.core.snapshot import Published

    published = Published(Config())
    with pytest.raises(RuntimeError, match="must not publish"):
        published.publish(lambda snap: published.publish(lambda inner: inner))
    assert published.publish(lambda snap: snap.with_routes({})).generation == 1  # the lock was let go


def test_a_copy_loaded_with_old_options_while_a_reload_prepares_does_not_serve_the_new_config(start: StartDaemon, tmp_path: Path) -> None:
    """Before: a request's load of v2 that finished while the reload loaded v1 anew was
    published with the old options and kept them until evicted; the reply said nothing."""
    old = fake_config(tmp_path, {"v1": {"normalize": False}, "v2": {"normalize": False}})
    new = fake_config(tmp_path, {"v1": {"normalize": False, "scale": 2.0}, "v2": {"normalize": False, "scale": 2.0}})
    with start(old) as daemon, daemon.client() as client, daemon.client() as other:
        client.encode(["warm"], "m@v1")
        v2_gate, v1_gate = threading.Event(), threading.Event()
        fakebackend.CONTROLS["v2"].load_gate = v2_gate
        loading = threading.Thread(target=lambda: other.encode(["x"], "m@v2"))
        loading.start()
        wait_for(lambda: fakebackend.CONTROLS["v2"].load_attempts, lambda n: n == 1)
        fakebackend.CONTROLS["v1"].load_gate = v1_gate
        daemon.config_path.write_text(new)
        replies: list[dict[str, object]] = []
        with daemon.client() as third:
            reloading = threading.Thread(target=lambda: replies.append(third.reload_config()))
            reloading.start()
            wait_for(lambda: fakebackend.CONTROLS["v1"].load_attempts, lambda n: n == 2)
            v2_gate.set()
            loading.join(10)
            v1_gate.set()
            reloading.join(10)
        assert replies and replies[0]["failed"] == {}
        v1 = client.encode(["hello"], "m@v1", no_cache=True).embeddings[0]
        v2 = client.encode(["hello"], "m@v2", no_cache=True).embeddings[0]
        assert np.allclose(v1, v2)  # both at the new scale


def test_a_reload_adding_a_member_to_an_ensemble_serves_the_new_ensemble(start: StartDaemon, tmp_path: Path) -> None:
    """Before: the fresh ensemble was assembled against the old config, where its new
    member did not exist: the reload reported a failure and the old ensemble served on."""
    base_one = fake_config(tmp_path, {"a": {"dim": 8}}, model="base")
    base_two = fake_config(tmp_path, {"a": {"dim": 8}, "b": {"dim": 8, "shift": 3}}, model="base")
    combo = '[models.combo]\nactive = "e"\n[models.combo.versions.e]\nbackend = "ensemble"\nmembers = [{members}]\n'
    one = base_one + combo.format(members='{ model = "base", version = "a" }')
    two = base_two + combo.format(members='{ model = "base", version = "a" }, { model = "base", version = "b" }')
    with start(one) as daemon, daemon.client() as client:
        assert client.encode(["x"], "combo").embeddings.shape == (1, 8)
        reply = _reload(daemon, client, two)
        assert reply["failed"] == {}
        assert client.encode(["x"], "combo").embeddings.shape == (1, 16)


def test_a_request_for_a_model_whose_version_a_reload_removes_while_it_loads_is_routed_again(start: StartDaemon, tmp_path: Path) -> None:
    """Before: it got UnknownVersion for a version the client never named."""
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client, daemon.client() as other:
        gate = threading.Event()
        fakebackend.CONTROLS["v1"].load_gate = gate
        results: list[object] = []

        def encode() -> None:
            try:
                results.append(other.encode(["x"], "m").version)
            except HotswapError as exc:
                results.append(exc)

        waiting = threading.Thread(target=encode)
        waiting.start()
        wait_for(lambda: fakebackend.CONTROLS["v1"].load_attempts, lambda n: n == 1)
        reply = _reload(daemon, client, fake_config(tmp_path, {"v2": {}}))
        gate.set()
        waiting.join(10)
        assert reply["failed"] == {} and results == ["v2"]
