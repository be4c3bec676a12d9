"""`hs tune` and `backend = "auto"` (issue 17): every path this machine can run is measured
against fp32 sentence-transformers, those under the gate are dropped, the fastest is chosen,
cached by CPU, libraries and weights, and served without torch when it does not need it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd.backends.support.precision import BF16_CPU_FLAGS
from hotswapd.host.cpu import cpu_flags
from hotswapd.config.schema import VersionConfig
from hotswapd.tuning import tune_record as tuning_record
from hotswapd.tuning import run as tuning_run
from hotswapd.tuning.run_paths import PATHS
from hotswapd.tuning.tune_record import TuneRecord, cache_file, eligible
from hotswapd.tuning.run import tuned
from tests.conftest import run_hs
from tests.daemons import start_daemon, write_config
from tests.tinymodel import build_tiny_model

pytestmark = pytest.mark.slow  # measures every path: torch, ONNX and OpenVINO exports
BF16_HERE = any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
# Between fp32 paths (differences ~1e-14 in cosine) and any reduced one (bf16, int8: >1e-10).
FP32_ONLY_GATE = 1 - 1e-11


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("tuning")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # the exports and the choice, this module's own
    build_tiny_model(work / "tiny")
    yield work
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(scope="module")
def measured(work: Path) -> TuneRecord:
    return tuned(work / "tiny", VersionConfig(backend="auto", source=str(work / "tiny")))


def test_every_path_is_measured_or_skipped_with_its_reason(measured: TuneRecord) -> None:
    rows = {row.path: row for row in measured.rows}
    assert set(rows) == set(PATHS)
    assert rows["torch-fp16"].status == "unavailable" and "CUDA" in (rows["torch-fp16"].reason or "")
    for name in ("torch-bf16", "openvino-bf16"):
        if BF16_HERE:
            assert rows[name].status == "measured", rows[name].reason
        else:
            assert rows[name].status == "unavailable" and "AVX-512 BF16 or AMX" in (rows[name].reason or "")
    for name in ("torch-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        row = rows[name]
        assert row.status == "measured", row.reason
        assert row.short_per_second and row.passages_per_second and row.single_p50_ms
        assert row.mean_cosine is not None and row.mean_cosine >= 0.99 and row.min_cosine is not None
    fastest = max(eligible(measured.rows, 0.99), key=lambda row: row.short_per_second or 0)
    assert measured.chosen == fastest.path
    assert measured.reason.startswith(f"fastest on short texts ({fastest.short_per_second:.0f}/s")
    assert TuneRecord.model_validate_json(cache_file(measured.key).read_bytes()) == measured


def test_a_gate_the_reduced_paths_miss_leaves_only_fp32_paths(work: Path, measured: TuneRecord) -> None:
    strict = tuned(work / "tiny", VersionConfig(backend="auto", source=str(work / "tiny"), min_cosine=FP32_ONLY_GATE))
    assert strict.key != measured.key  # the gate is part of the key
    rows = {row.path: row for row in strict.rows}
    reduced = [name for name in PATHS if not name.endswith("fp32") and rows[name].status != "unavailable"]
    assert "onnx-int8" in reduced and "openvino-int8" in reduced
    for name in reduced:  # each backend's own gate refused it, with the figures
        assert rows[name].status == "refused" and f"min_cosine {FP32_ONLY_GATE}" in (rows[name].reason or ""), rows[name]
    assert strict.chosen.endswith("fp32") and rows[strict.chosen].mean_cosine >= FP32_ONLY_GATE


class Measured(Exception):
    """Raised by the stand-in for the measurement: the cache was not used."""


def _no_measuring(*args: object) -> None:
    raise Measured


def test_the_cached_choice_is_reused_and_a_new_cpu_a_bad_file_or_force_measure_again(
    work: Path, measured: TuneRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = VersionConfig(backend="auto", source=str(work / "tiny"))
    monkeypatch.setattr(tuning_run, "_measure", _no_measuring)
    assert tuned(work / "tiny", version) == measured
    with pytest.raises(Measured):
        tuned(work / "tiny", version, force=True)
    file = cache_file(measured.key)
    good = file.read_bytes()
    try:
        for bad in (b"{", good.replace(b'"chosen": "', b'"chosen": "torch-fp16'), good.replace(b'"key": "', b'"key": "x')):
            file.write_bytes(bad)
            with pytest.raises(Measured):
                tuned(work / "tiny", version)
    finally:
        file.write_bytes(good)
    monkeypatch.setattr(tuning_record, "cpu_identity", lambda: "Another CPU [0123456789ab]")
    with pytest.raises(Measured):
        tuned(work / "tiny", version)


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_an_auto_version_serves_the_cached_choice_without_torch_and_hs_tune_shows_the_table(work: Path, measured: TuneRecord) -> None:
    config = write_config(
        work / "config.toml",
        f'[models.tiny]\nactive = "auto"\n[models.tiny.versions.auto]\nbackend = "auto"\nsource = "{work / "tiny"}"\npreload = true\n'
        f'[models.tiny.versions.st]\nsource = "{work / "tiny"}"\n',
    )
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}, wait=120)
    try:
        with daemon.client(timeout=120) as client:
            auto = client.encode(["The bank raised rates.", "A longer text about the weather " * 5], "tiny@auto")
            assert "tuning: " in daemon.log() and "(cached; measured" in daemon.log() and "measuring" not in daemon.log()
            if not measured.chosen.startswith("torch"):
                assert not _maps_torch(daemon.process.pid), "the chosen path needs no torch, yet the daemon loaded it"
            row = next(item for model in client.models() for item in model["version_detail"] if item["version"] == "auto")
            assert row["path"] == measured.chosen and row["path_reason"] == f"auto: {measured.reason}"
            st = client.encode(["The bank raised rates.", "A longer text about the weather " * 5], "tiny@st")
            assert np.sum(auto.embeddings * st.embeddings, axis=1).min() >= 0.99
            assert auto.fingerprint != st.fingerprint  # another computation of the same weights
            client.switch("tiny", "st")  # one space: the chosen path passed the accuracy gate
        done = run_hs("tune", "tiny@auto", endpoint=daemon.endpoint)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, err
        assert all(name in out for name in PATHS)
        assert f"chosen: {measured.chosen}" in err and "tiny@auto (backend auto): serving" in err
        other = run_hs("tune", "tiny@st", endpoint=daemon.endpoint)
        assert other.returncode == 0 and 'not applied: the version\'s backend is not "auto"' in other.stderr.decode()
    finally:
        daemon.stop()


def test_a_graph_never_checked_against_its_model_is_not_taken_for_the_same_space(work: Path, measured: TuneRecord) -> None:
    from hotswapd.core.compat import describe_space, incompatibilities
    from hotswapd.pipeline.standalone import load_version

    exported = next((work / "cache" / "hotswapd" / "onnx").glob("*/model.onnx"))
    given = work / "given"
    given.mkdir(exist_ok=True)
    for item in (work / "tiny").iterdir():
        if item.is_file():
            (given / item.name).write_bytes(item.read_bytes())
    (given / "model.onnx").write_bytes(exported.read_bytes())
    config = write_config(
        work / "spaces.toml",
        f'[models.tiny]\nactive = "st"\n[models.tiny.versions.st]\nsource = "{work / "tiny"}"\n'
        f'[models.tiny.versions.unchecked]\nbackend = "onnx"\nsource = "{given}"\n'
        f'[models.tiny.versions.checked]\nbackend = "onnx"\nsource = "{given}"\nreference = "{work / "tiny"}"\n',
    )
    st, unchecked, checked = (load_version(config, f"tiny@{name}") for name in ("st", "unchecked", "checked"))
    assert incompatibilities(describe_space(st), describe_space(checked)) == []
    problems = incompatibilities(describe_space(st), describe_space(unchecked))
    assert problems and "conversion" in problems[0]


def test_loading_a_tuned_version_imports_no_torch(work: Path, measured: TuneRecord) -> None:
    config = write_config(work / "auto.toml", f'[models.tiny]\nactive = "auto"\n[models.tiny.versions.auto]\nbackend = "auto"\nsource = "{work / "tiny"}"\n')
    script = (
        "import sys\nfrom hotswapd.pipeline.standalone import encode_texts, load_version\n"
        f"loaded = load_version({str(config)!r}, 'tiny@auto')\n"
        "assert encode_texts(loaded, ['x']).shape[0] == 1\n"
        "print(loaded.embedder.tuned_path, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    needs_torch = str(measured.chosen.startswith("torch"))  # on some CPU torch may be fastest
    assert done.stdout.split() == [measured.chosen, needs_torch, needs_torch]


def test_stopping_the_daemon_ends_a_measurement_in_progress(work: Path) -> None:
    """Before: the daemon waited out the measurement (minutes on a real model) and left its
    conversions running after it exited."""
    import time

    config = write_config(work / "stop.toml", f'[models.tiny]\nactive = "auto"\n[models.tiny.versions.auto]\nbackend = "auto"\nsource = "{work / "tiny"}"\n')
    cache = work / "fresh-cache"  # nothing cached: the first load measures
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(cache)}, wait=120)
    pending = subprocess.Popen([sys.executable, "-c", f"from hotswapd.client.connection import Client; Client({daemon.endpoint!r}, timeout=300).encode(['x'], 'tiny@auto')"],
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while "measuring" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "measuring" in daemon.log()
    time.sleep(2)  # into the conversions
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 20
    assert b"the daemon is stopping" in pending.communicate(timeout=30)[1]
    for pattern in ("hotswapd.tuning.measure", f"hotswapd.backends.(onnx|openvino)_export.*{work}"):
        assert subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).stdout == b"", pattern
    assert not list(cache.glob("hotswapd/*/*.tmp-*"))  # no staging left behind
