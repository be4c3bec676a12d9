"""`hs models` and `hs status` while a config reload has updated the config but not yet the
routes: the model in between is left out, not an internal error (seen once in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotswapd.errors import HotswapError
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_a_model_without_a_route_yet_is_left_out_of_models_and_status(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}}) + fake_config(tmp_path, {"w1": {}}, model="other").split("\n", 1)[1]
    with start(config) as inproc, inproc.client() as client:
        assert {row["name"] for row in client.models()} == {"m", "other"}
        switchboard = inproc.daemon.switchboard
        with switchboard._lock:
            del switchboard._routes["other"]  # the instant of a reload between the config and the routes
        assert [row["name"] for row in client.models()] == ["m"]
        assert client.status()["pid"] > 0


def test_models_mid_reload_follow_the_routes_config_not_half_of_each(start: StartDaemon, tmp_path: Path) -> None:
    """Routes adopt a reloaded config a moment before the registry does; `hs models` read the
    old registry's versions beside the new routes, and listed removed versions as loaded
    (test_live_config failed on it in CI: ['v1', 'v2', 'wide'] after v2 and wide were removed)."""
    from hotswapd.config import load_config

    old = fake_config(tmp_path, {"v1": {}, "v2": {}}) + fake_config(tmp_path, {"w1": {}}, model="other").split("\n", 1)[1]
    (tmp_path / "new.toml").write_text(fake_config(tmp_path, {"v1": {}}))
    with start(old) as inproc, inproc.client() as client:
        client.encode(["x"], "m@v2")
        assert "v2" in client.models()[0]["loaded_versions"]
        inproc.daemon.switchboard.adopt_config(load_config(tmp_path / "new.toml"))  # the routes' half of a reload
        rows = client.models()
        assert [row["name"] for row in rows] == ["m"]
        assert rows[0]["versions"] == ["v1"] and "v2" not in rows[0]["loaded_versions"]
        assert [item["version"] for item in rows[0]["version_detail"]] == ["v1"]


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
