"""`hs doctor`: one line per check with a fix, --json, exit 1 on a failure, never a daemon started."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotswapd.host.lockfile import holder_pid
from tests.daemons import daemon_env, short_socket_dir, start_daemon, write_config

HS = Path(sys.executable).with_name("hs")
STATUSES = {"ok", "warn", "fail"}


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """XDG dirs in tmp_path and a short socket path: nothing touches the real home."""
    socket_dir = short_socket_dir()
    values = {name: str(tmp_path / name.lower()) for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR")}
    Path(values["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
    values["HOTSWAPD_SOCKET"] = f"ipc://{socket_dir}/d.sock"
    yield values
    shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture()
def valid_config(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    return write_config(tmp_path / "config.toml", '[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "model"\n')


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HS), *args, "doctor"], check=False, capture_output=True, text=True, env=daemon_env(**env), timeout=60)


def doctor_json(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run([str(HS), *args, "doctor", "--json"], check=False, capture_output=True, text=True, env=daemon_env(**env), timeout=60)
    return done.returncode, json.loads(done.stdout)


def lines_of(output: str, check: str) -> list[str]:
    return [line for line in output.splitlines() if line.split()[1:2] == [check]]


def test_valid_config_without_a_daemon(env: dict[str, str], valid_config: Path) -> None:
    done = doctor(env, "--config", str(valid_config))
    assert done.returncode == 0, done.stdout + done.stderr
    [sock] = lines_of(done.stdout, "socket")
    assert sock.startswith("warn ") and "no hotswapd is running" in sock
    assert "— fix: hs daemon start" in sock
    [config] = lines_of(done.stdout, "config")
    assert config.startswith("ok ") and "1 model, 1 version" in config
    [source] = lines_of(done.stdout, "source")
    assert source.startswith("ok ") and "m@v1" in source
    # Doctor never starts a daemon: no socket file, nobody holds the lock.
    socket_path = Path(env["HOTSWAPD_SOCKET"].removeprefix("ipc://"))
    assert not socket_path.exists()
    assert holder_pid(socket_path.with_name("d.sock.lock")) is None


def test_broken_config_fails_naming_the_problem(env: dict[str, str], tmp_path: Path) -> None:
    broken = write_config(tmp_path / "broken.toml", '[models.m]\nactive = "v9"\n[models.m.versions.v1]\nsource = "."\n')
    done = doctor(env, "--config", str(broken))
    assert done.returncode == 1
    [config] = lines_of(done.stdout, "config")
    assert config.startswith("fail ") and "active version 'v9'" in config and str(broken) in config
    assert "— fix: " in config and "hs config validate" in config
    assert lines_of(done.stdout, "cpu"), "the other checks still run"


def test_toml_syntax_error_fails(env: dict[str, str], tmp_path: Path) -> None:
    broken = write_config(tmp_path / "syntax.toml", "[models.m\n")
    done = doctor(env, "--config", str(broken))
    assert done.returncode == 1 and "not valid TOML" in lines_of(done.stdout, "config")[0]


def test_missing_config_file_named_explicitly_fails(env: dict[str, str], tmp_path: Path) -> None:
    done = doctor({**env, "HOTSWAPD_CONFIG": str(tmp_path / "absent.toml")})
    assert done.returncode == 1
    assert "no such config file" in lines_of(done.stdout, "config")[0]


def test_missing_path_source_fails(env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "nowhere"\n')
    done = doctor(env, "--config", str(config))
    assert done.returncode == 1
    [source] = lines_of(done.stdout, "source")
    assert source.startswith("fail ") and "m@v1" in source and f"{tmp_path}/nowhere does not exist" in source
    assert f"— fix: check the path (relative paths resolve against {tmp_path})" in source


def test_missing_package_source_names_what_to_install(env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "package:no_such_pkg_xyz/model"\n')
    [source] = lines_of(doctor(env, "--config", str(config)).stdout, "source")
    assert source.startswith("fail ") and "no_such_pkg_xyz" in source and "fix: pip install" in source


def test_json_shape(env: dict[str, str], valid_config: Path) -> None:
    code, rows = doctor_json(env, "--config", str(valid_config))
    assert code == 0
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == {"check", "status", "detail", "fix"}
        assert row["status"] in STATUSES and isinstance(row["detail"], str)
        assert row["fix"] is None or isinstance(row["fix"], str)
        assert row["status"] == "ok" or row["fix"], row
    assert {row["check"] for row in rows} == {"socket", "config", "source", "backend", "dir", "unit", "cpu"}


def test_backend_rows_follow_what_is_installed(env: dict[str, str], valid_config: Path) -> None:
    from hotswap_cli.doctor_platform import BACKEND_LIBRARIES, installed

    _, rows = doctor_json(env, "--config", str(valid_config))
    backends = {row["detail"].split(":")[0]: row for row in rows if row["check"] == "backend"}
    assert set(backends) == set(BACKEND_LIBRARIES)
    for name, modules in BACKEND_LIBRARIES.items():
        expected = "ok" if all(installed(module) for module in modules) else ("fail" if name == "sentence-transformers" else "warn")
        assert backends[name]["status"] == expected, backends[name]


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from hotswap_cli import doctor_platform

    monkeypatch.setattr(doctor_platform, "installed", lambda module: module not in {"onnxruntime", "boto3"})
    rows = {row.detail.split(":")[0]: row for row in doctor_platform.backend_checks({"onnx"})}
    assert rows["onnx"].status == "fail" and rows["onnx"].fix == "pip install 'hotswap[onnx]'"
    assert "onnxruntime not installed (used by the config)" in rows["onnx"].detail
    assert rows["sagemaker"].status == "warn" and rows["sagemaker"].fix == "pip install 'hotswap[aws]'"
    assert rows["sentence-transformers"].status == "ok"
    # With the config unknown (it did not load), a missing library is only a warning.
    assert {row.status for row in doctor_platform.backend_checks(None)} <= {"ok", "warn"}


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_doctor_imports_no_inference_library(env: dict[str, str], valid_config: Path) -> None:
    """find_spec, not import: doctor stays fast."""
    probe = (
        "import sys\nsys.argv = ['hs', '--config', sys.argv[1], 'doctor']\nfrom hotswap_cli.main import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)"
    )
    command = [sys.executable, "-c", probe, str(valid_config)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=daemon_env(**env), timeout=60)
    loaded = {name.split(".")[0] for name in done.stderr.split()}
    assert not loaded & {"torch", "onnxruntime", "sentence_transformers", "transformers", "boto3"}


def test_dirs_writable_and_owner_only(env: dict[str, str], valid_config: Path) -> None:
    _, rows = doctor_json(env, "--config", str(valid_config))
    dirs = [row for row in rows if row["check"] == "dir"]
    assert [row["detail"].split()[0] for row in dirs[:3]] == ["state", "cache", "runtime"]
    assert all(row["status"] == "ok" for row in dirs), dirs

    state = Path(env["XDG_STATE_HOME"]) / "hotswapd"
    state.mkdir(parents=True, mode=0o755)
    state.chmod(0o755)
    _, rows = doctor_json(env, "--config", str(valid_config))
    [row] = [row for row in rows if row["check"] == "dir" and row["detail"].startswith("state")]
    assert row["status"] == "warn" and row["fix"].startswith(f"chmod 700 {state}")

    state.rmdir()
    state.write_text("")
    code, rows = doctor_json(env, "--config", str(valid_config))
    [row] = [row for row in rows if row["check"] == "dir" and row["detail"].startswith("state")]
    assert code == 1 and row["status"] == "fail" and "not a directory" in row["detail"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_unwritable_cache_dir_fails(env: dict[str, str], valid_config: Path) -> None:
    """Not writable by mode for a user; for root (CI), a read-only bind mount in a mount
    namespace of its own: root may write through any mode."""
    cache = Path(env["XDG_CACHE_HOME"]) / "hotswapd"
    cache.mkdir(parents=True)
    if os.geteuid() != 0:
        cache.chmod(0o500)
        try:
            code, rows = doctor_json(env, "--config", str(valid_config))
        finally:
            cache.chmod(0o700)
        expected = "not writable"
    else:
        script = f"mount --bind -o ro {cache} {cache} && exec {HS} --config {valid_config} doctor --json"
        done = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=daemon_env(**env), capture_output=True, check=False, timeout=60)
        code, rows = done.returncode, json.loads(done.stdout)
        expected = "read-only file system"
    [row] = [row for row in rows if row["check"] == "dir" and row["detail"].startswith("cache")]
    assert code == 1 and row["status"] == "fail" and expected in row["detail"], row


def test_stale_socket_file_is_named(env: dict[str, str], valid_config: Path) -> None:
    path = env["HOTSWAPD_SOCKET"].removeprefix("ipc://")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # a socket file left behind, with no daemon holding the lock
    [sock] = lines_of(doctor(env, "--config", str(valid_config)).stdout, "socket")
    assert sock.startswith("warn ") and "stale socket file" in sock and "hs daemon start" in sock


@pytest.mark.slow
def test_running_daemon_answers(env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "empty.toml", '[daemon]\nlog_level = "info"\n')  # no models: no torch
    daemon = start_daemon(config, tmp_path)
    try:
        done = doctor({**env, "HOTSWAPD_SOCKET": daemon.endpoint}, "--config", str(config))
    finally:
        assert daemon.stop() == 0, daemon.log()
    sockets = lines_of(done.stdout, "socket")
    assert [line.split()[0] for line in sockets] == ["ok", "ok"], done.stdout
    assert "is yours and private" in sockets[0] and f"answers on {daemon.endpoint}" in sockets[1]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_unit_installed_matches_then_differs(env: dict[str, str], valid_config: Path) -> None:
    installed = subprocess.run([str(HS), "--config", str(valid_config), "daemon", "unit", "--install"],
                               check=False, capture_output=True, text=True, env=daemon_env(**env), timeout=60)
    assert installed.returncode == 0, installed.stderr
    [unit] = lines_of(doctor(env, "--config", str(valid_config)).stdout, "unit")
    assert unit.startswith("ok ") and "matches" in unit

    target = Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "hotswapd.service"
    target.write_text(target.read_text().replace("RestartSec=2", "RestartSec=9"))
    [unit] = lines_of(doctor(env, "--config", str(valid_config)).stdout, "unit")
    assert unit.startswith("warn ") and "RestartSec=9" in unit and "hs daemon unit --install --force" in unit


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx avx2 fma", "AVX2 only ("),
        ("avx2 avx512f avx512_vnni avx512_bf16", "AVX-512 VNNI ("),
        ("avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16", "AMX ("),
        ("avx2 avx512f", "AVX-512 without VNNI ("),
    ],
)
def test_cpu_table(tmp_path: Path, flags: str, expected: str) -> None:
    from hotswap_cli.doctor_platform import cpu_check

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: sse\n")
    row = cpu_check(cpuinfo)
    assert row.status == "ok" and row.detail.startswith(expected) and "int8" in row.detail and "hs tune" in row.detail, row.detail


def test_cpu_without_avx2_or_cpuinfo_warns(tmp_path: Path) -> None:
    from hotswap_cli.doctor_platform import cpu_check

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu sse sse2\n")
    assert cpu_check(cpuinfo).status == "warn"
    assert cpu_check(tmp_path / "absent").status == "warn"


def test_a_config_with_an_ensemble_passes(env: dict[str, str], valid_config: Path) -> None:
    text = valid_config.read_text() + '[models.e]\nactive = "v1"\n[models.e.versions.v1]\nbackend = "ensemble"\nmembers = [{ model = "m", version = "v1" }]\n'
    valid_config.write_text(text)
    done = doctor(env, "--config", str(valid_config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("ok ") and "ensemble: built in (used by the config)" in line for line in lines_of(done.stdout, "backend"))
