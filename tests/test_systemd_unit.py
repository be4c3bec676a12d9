"""`hs daemon unit`: a hardened user unit with absolute paths, installed without clobbering."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hotswapd.host.systemd import UnitError, UnitSpec, unit_text
from tests.daemons import daemon_env

HS = Path(sys.executable).with_name("hs")
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 4.0
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture()
def xdg(tmp_path: Path) -> dict[str, str]:
    """Every XDG directory inside tmp_path: nothing is written to the real home."""
    dirs = {name: tmp_path / name.lower() for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    return {name: str(path) for name, path in dirs.items()}


def hs(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HS), *args], check=False, capture_output=True, text=True, env=daemon_env(**env), cwd=cwd, timeout=60)


def exec_start(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


def exposure(unit: str, workdir: Path, env: dict[str, str]) -> float:
    path = workdir / "hotswapd.service"
    path.write_text(unit)
    done = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", "--user", "--no-pager", str(path)],
        check=False, capture_output=True, text=True, env=daemon_env(**env), timeout=60,
    )
    match = re.search(r"Overall exposure level for hotswapd\.service: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def spec(**overrides: object) -> UnitSpec:
    fields: dict[str, object] = {
        "command": ("/opt/hotswap/bin/hotswapd",),
        "state_dir": Path("/home/u/.local/state/hotswapd"),
        "cache_dir": Path("/home/u/.cache/hotswapd"),
    }
    return UnitSpec(**{**fields, **overrides})  # type: ignore[arg-type]


@needs_analyze
def test_printed_unit_exposure_is_at_most_4(tmp_path: Path, xdg: dict[str, str]) -> None:
    done = hs("daemon", "unit", env=xdg)
    assert done.returncode == 0, done.stderr
    assert exposure(done.stdout, tmp_path, xdg) <= MAX_EXPOSURE


@needs_analyze
@pytest.mark.parametrize(
    "variant",
    [{}, {"gpu": True}, {"socket_dir": Path("/tmp/hs-sock")}, {"gpu": True, "socket_dir": Path("/tmp/hs-sock")}],
    ids=["cpu", "gpu", "socket-in-tmp", "gpu-socket-in-tmp"],
)
def test_every_variant_stays_at_most_4(tmp_path: Path, xdg: dict[str, str], variant: dict[str, object]) -> None:
    assert exposure(unit_text(spec(**variant)), tmp_path, xdg) <= MAX_EXPOSURE


@needs_analyze
def test_unit_verifies(tmp_path: Path, xdg: dict[str, str]) -> None:
    path = tmp_path / "hotswapd.service"
    path.write_text(hs("daemon", "unit", env=xdg).stdout)
    command = [str(ANALYZE), "verify", "--user", str(path)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=daemon_env(**xdg), timeout=60)
    assert done.returncode == 0, done.stderr


def test_hardening_lines_present() -> None:
    lines = set(unit_text(spec()).splitlines())
    for expected in (
        "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes", "UMask=0077",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "LockPersonality=yes", "PrivateDevices=yes",
        "ReadWritePaths=/home/u/.local/state/hotswapd /home/u/.cache/hotswapd %t/hotswapd",
        "Environment=XDG_STATE_HOME=/home/u/.local/state XDG_CACHE_HOME=/home/u/.cache",
    ):
        assert expected in lines
    assert not any(line.startswith("MemoryDenyWriteExecute=") for line in lines)


def test_socket_in_tmp_keeps_the_shared_tmp_and_makes_its_dir_writable() -> None:
    lines = unit_text(spec(socket_dir=Path("/tmp/hs-sock"))).splitlines()
    assert "PrivateTmp=yes" not in lines
    assert any(line.startswith("ReadWritePaths=") and "/tmp/hs-sock" in line for line in lines)
    assert any(line.startswith("ExecStartPre=+/bin/mkdir") and "/tmp/hs-sock" in line for line in lines)


def test_gpu_keeps_devices_visible() -> None:
    lines = unit_text(spec(gpu=True)).splitlines()
    assert "PrivateDevices=yes" not in lines and "ProtectClock=yes" not in lines


def test_paths_are_escaped_for_systemd() -> None:
    text = unit_text(spec(command=("/opt/my env/bin/hotswapd", "--config", "/cfg/100%/$HOME.toml")))
    assert exec_start(text) == 'ExecStart="/opt/my env/bin/hotswapd" --config /cfg/100%%/$$HOME.toml'
    with pytest.raises(UnitError, match="quotes, backslashes"):
        unit_text(spec(command=('/opt/"x"/hotswapd',)))


def test_relative_config_and_socket_become_absolute(tmp_path: Path, xdg: dict[str, str]) -> None:
    done = hs("--config", "conf/hs.toml", "--socket", "run/d.sock", "daemon", "unit", env=xdg, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = exec_start(done.stdout)
    assert f"--config {tmp_path}/conf/hs.toml" in line
    assert f"--socket ipc://{tmp_path}/run/d.sock" in line
    assert re.match(r"ExecStart=/\S+", line), line
    assert f"{tmp_path}/run " in next(row for row in done.stdout.splitlines() if row.startswith("ReadWritePaths=")) + " "


def test_config_from_the_environment_becomes_absolute(tmp_path: Path, xdg: dict[str, str]) -> None:
    done = hs("daemon", "unit", env={**xdg, "HOTSWAPD_CONFIG": "other.toml"}, cwd=tmp_path)
    assert f"--config {tmp_path}/other.toml" in exec_start(done.stdout)


def test_default_config_is_named_only_when_it_exists(xdg: dict[str, str]) -> None:
    assert "--config" not in exec_start(hs("daemon", "unit", env=xdg).stdout)
    default = Path(xdg["XDG_CONFIG_HOME"]) / "hotswapd" / "config.toml"
    default.parent.mkdir()
    default.write_text("")
    assert f"--config {default}" in exec_start(hs("daemon", "unit", env=xdg).stdout)


def test_install_refuses_to_overwrite_a_different_unit_without_force(xdg: dict[str, str]) -> None:
    target = Path(xdg["XDG_CONFIG_HOME"]) / "systemd" / "user" / "hotswapd.service"
    first = hs("daemon", "unit", "--install", env=xdg)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout
    assert target.read_text() == hs("daemon", "unit", env=xdg).stdout

    again = hs("daemon", "unit", "--install", env=xdg)
    assert again.returncode == 0 and "already installed" in again.stdout

    original = target.read_text()
    other = {**xdg, "HOTSWAPD_CONFIG": "/etc/hotswap/other.toml"}
    refused = hs("daemon", "unit", "--install", env=other)
    assert refused.returncode != 0
    assert refused.stderr.startswith("hs: error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert "--force" in refused.stderr
    assert target.read_text() == original

    forced = hs("daemon", "unit", "--install", "--force", env=other)
    assert forced.returncode == 0, forced.stderr
    assert "--config /etc/hotswap/other.toml" in exec_start(target.read_text())
    assert not [path for path in target.parent.iterdir() if path.name != "hotswapd.service"]  # no temp files left
