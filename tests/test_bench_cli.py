"""`hs bench` against the shared daemon, as a user runs it."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

from tests.conftest import HsRunner

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow


def test_bench_measures_versions_and_keeps_a_history(hs: HsRunner, tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    done = hs("bench", "tiny", "minilm", "--duration", "0.5", "--concurrency", "2", "--batch-size", "8", "--json", env=env)
    assert done.returncode == 0, done.stderr.decode()
    rows = json.loads(done.stdout)
    assert [row["model"] for row in rows] == ["tiny", "minilm"]
    for row in rows:
        assert row["texts_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["cached_p50_ms"] > 0 and row["memory_bytes"] > 0
    history = hs("bench", "--history", "--json", env=env)
    assert [entry["model"] for entry in json.loads(history.stdout)] == ["tiny", "minilm"]
    table = hs("bench", "--history", env=env)
    assert table.returncode == 0 and b"tiny@v1" in table.stdout


def test_bench_of_an_unknown_model_is_one_clear_line(hs: HsRunner) -> None:
    done = hs("bench", "nope", "--duration", "0.5")
    assert done.returncode == 1
    assert done.stderr.decode().strip().startswith("hs: error: unknown model 'nope'")
