"""The config file edited while the daemon runs, the ways editors save it; restarts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotswapd import Client
from hotswapd.errors import ConfigError, UnknownVersion
from tests.conftest import run_hs
from tests.daemons import RunningDaemon, start_daemon, wait_for, wait_ready, write_config

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow


def config_text(paths: dict[str, Path], active: str, versions: tuple[str, ...] = ("v1", "v2"), extra_model: bool = False) -> str:
    text = f'[daemon]\ndefault_model = "live"\nwatch_debounce_seconds = 0.2\n[models.live]\nactive = "{active}"\n'
    for version in versions:
        text += f'[models.live.versions.{version}]\nsource = "{paths[version]}"\n'
    if extra_model:
        text += f'[models.extra]\nactive = "v1"\n[models.extra.versions.v1]\nsource = "{paths["v1"]}"\n'
    return text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Iterator[tuple[RunningDaemon, dict[str, Path]]]:
    workdir = tmp_path_factory.mktemp("live")
    confdir = workdir / "conf"  # the daemon's log lives elsewhere, as in real life
    confdir.mkdir()
    daemon = start_daemon(write_config(confdir / "config.toml", config_text(tiny_models, "v1")), workdir)
    with daemon.client() as client:
        wait_ready(client)
    yield daemon, tiny_models
    assert daemon.stop() == 0, daemon.log()


def active(client: Client) -> str:
    return client.encode(["probe"], "live").version


def test_edit_in_place_switches(live: tuple[RunningDaemon, dict[str, Path]]) -> None:
    daemon, paths = live
    with daemon.client() as client:
        assert active(client) == "v1"
        with open(daemon.config_path, "r+") as handle:  # truncate and write, as many editors do
            handle.truncate(0)
            handle.write(config_text(paths, "v2"))
        wait_for(lambda: active(client), lambda v: v == "v2")
        last = client.history("live")[-1]
        assert (last["event"], last["trigger"], last["to"]) == ("switch", "config", "v2")


def test_atomic_rename_switches_back(live: tuple[RunningDaemon, dict[str, Path]]) -> None:
    daemon, paths = live
    with daemon.client() as client:
        temp = daemon.config_path.with_name(".config.toml.swp")
        temp.write_text(config_text(paths, "v1"))
        os.replace(temp, daemon.config_path)
        wait_for(lambda: active(client), lambda v: v == "v1")


def test_a_burst_of_writes_is_applied_once(live: tuple[RunningDaemon, dict[str, Path]]) -> None:
    daemon, paths = live
    with daemon.client() as client:
        applied_before = len(client.history(all_events=True, limit=1000))
        final = config_text(paths, "v2")
        for cut in range(0, len(final), max(1, len(final) // 8)):  # partial, invalid files on the way
            daemon.config_path.write_text(final[:cut])
        daemon.config_path.write_text(final)
        wait_for(lambda: active(client), lambda v: v == "v2")
        time.sleep(1.0)
        new = client.history(all_events=True, limit=1000)[applied_before:]
        assert [e["event"] for e in new if e["event"].startswith("config_")] == ["config_applied"]
        assert client.status()["config_error"] is None


def test_invalid_file_keeps_state_and_the_next_good_save_applies(live: tuple[RunningDaemon, dict[str, Path]]) -> None:
    daemon, paths = live
    with daemon.client() as client:
        daemon.config_path.write_text(config_text(paths, "v1").replace('active = "v1"', 'active = "nope"'))
        status = wait_for(client.status, lambda s: s["config_error"] is not None)
        assert "active version 'nope' is not among versions" in status["config_error"]
        assert active(client) == "v2"
        rejected = client.history("live", all_events=True)
        assert any(e["event"] == "config_rejected" for e in client.history(all_events=True))
        assert rejected == client.history("live", all_events=True)
        assert "config error" in run_hs("status", endpoint=daemon.endpoint, env={"COLUMNS": "300"}).stdout.decode()

        with pytest.raises(ConfigError, match="not among versions"):
            client.reload_config()
        done = run_hs("config", "reload", endpoint=daemon.endpoint)
        assert done.returncode == 2 and b"not among versions" in done.stderr

        daemon.config_path.write_text(config_text(paths, "v1"))
        wait_for(lambda: active(client), lambda v: v == "v1")
        assert client.status()["config_error"] is None


def _dim_or_none(client: Client, spec: str) -> int | None:
    try:
        return client.encode(["x"], spec).dim
    except UnknownVersion:
        return None


def test_versions_and_models_added_and_removed(live: tuple[RunningDaemon, dict[str, Path]]) -> None:
    daemon, paths = live
    with daemon.client() as client:
        daemon.config_path.write_text(config_text(paths, "v1", ("v1", "v2", "wide"), extra_model=True))
        wait_for(client.models, lambda rows: {r["name"] for r in rows} == {"live", "extra"})
        # `hs models` follows the routes, which take a new config a moment before the registry does.
        assert wait_for(lambda: _dim_or_none(client, "live@wide"), lambda dim: dim is not None) == 48
        assert "wide" in {r["name"]: r for r in client.models()}["live"]["loaded_versions"]

        daemon.config_path.write_text(config_text(paths, "v1", ("v1",)))
        wait_for(client.models, lambda rows: [r["name"] for r in rows] == ["live"])
        assert {r["name"]: r for r in client.models()}["live"]["loaded_versions"] == ["v1"]
        # Unloading follows the routes by a moment (the registry adopts the config after them).
        wait_for(client.status, lambda status: not any(loaded.startswith("live@wide") for loaded in status["loaded"]))
        assert active(client) == "v1"
        done = run_hs("config", "reload", endpoint=daemon.endpoint)
        assert done.returncode == 0 and done.stdout.startswith(b"config applied")


def test_restart_restores_switches_until_the_file_changes(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    paths = {**tiny_models, "v3": tiny_models["v2"]}
    config = write_config(tmp_path / "config.toml", config_text(paths, "v1", ("v1", "v2", "v3")))
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = start_daemon(config, tmp_path, extra_env=state)
    with first.client() as client:
        client.switch("live", "v2")
    assert first.stop() == 0

    second = start_daemon(config, tmp_path, extra_env=state)
    with second.client() as client:
        assert active(client) == "v2"
        assert client.status()["active"] == {"live": "v2"}
    assert second.stop() == 0

    config.write_text(config_text(paths, "v3", ("v1", "v2", "v3")))
    third = start_daemon(config, tmp_path, extra_env=state)
    with third.client() as client:
        assert active(client) == "v3"
    assert third.stop() == 0
