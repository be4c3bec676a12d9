"""The tuning cache is a file on disk: whatever is in it, a load measures again rather than
trust a record that does not add up (issue 17). No torch: records are built by hand."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from hotswapd.errors import ModelLoadError
from hotswapd.tuning.tune_record import PathRow, cache_file, eligible, read_cached, write_cached
from hotswapd.tuning import run as tuning_run
from hotswapd.tuning.run_paths import PATHS
from hotswapd.tuning.run import choose, tuned


def _row(path: str, rate: float | None, cosine: float | None, status: str = "measured") -> PathRow:
    return PathRow(path=path, backend=PATHS[path][0], options=dict(PATHS[path][1]), status=status, short_per_second=rate, passages_per_second=rate and rate / 10,
                   single_p50_ms=1.0 if rate else None, mean_cosine=cosine, min_cosine=cosine, reason=None if status == "measured" else "no")


ALL = list(PATHS)
ROWS = [_row("torch-fp32", 100.0, 1.0), _row("onnx-int8", 300.0, 0.985), _row("onnx-fp32", 150.0, 0.9999), _row("torch-fp16", None, None, "unavailable")]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_fastest_path_above_the_gate_is_chosen_and_the_reason_names_the_ratio() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, time.time(), ALL)
    assert record.chosen == "onnx-fp32"  # int8 is faster but under the gate
    assert record.reason.startswith("fastest on short texts (150/s, 1.50x torch-fp32) of 2 measured paths")
    assert [row.path for row in eligible(ROWS, 0.98)] == ["torch-fp32", "onnx-int8", "onnx-fp32"]


def test_no_path_above_the_gate_is_an_error_that_names_each_path() -> None:
    with pytest.raises(ModelLoadError, match=r"no path runs here at min_cosine 1\.0: .*onnx-int8: mean cosine 0\.985.*torch-fp16: no"):
        choose("k" * 24, "w" * 16, ROWS[1:], 1.0, time.time(), ALL)


def test_a_record_reads_back_as_written() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, time.time(), ALL)
    write_cached(record)
    assert read_cached(record.key) == record


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: b"[1, 2",
        lambda data: data.replace(b'"chosen": "onnx-fp32"', b'"chosen": "onnx-int8"'),  # under the gate
        lambda data: data.replace(b'"chosen": "onnx-fp32"', b'"chosen": "torch-fp16"'),  # never measured
        lambda data: data.replace(b'"short_per_second": 150.0', b'"short_per_second": NaN'),
        lambda data: data.replace(b'"status": "measured"', b'"status": "great"', 1),
        lambda data: data.replace(b'"weights"', b'"extra": 1, "weights"'),
        lambda data: data.replace(b'"min_cosine": 0.99,', b'"min_cosine": "0.99",'),  # strict: no strings for numbers
        lambda data: data + b" " * (1 << 20),  # past the size a record can have
        lambda data: re.sub(rb'"measured_at": [0-9.e+]+', b'"measured_at": 1e20', data),  # before: OverflowError at every load
    ],
)
def test_a_damaged_record_is_not_trusted(damage) -> None:  # type: ignore[no-untyped-def]
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, time.time(), ALL)
    file = write_cached(record)
    data = json.dumps(json.loads(file.read_bytes())).encode()
    assert b'"chosen": "onnx-fp32"' in data
    file.chmod(0o600)
    file.write_bytes(damage(data))
    assert read_cached(record.key) is None


def test_a_record_under_another_key_or_a_fifo_in_its_place_is_not_trusted() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, time.time(), ALL)
    write_cached(record)
    os.rename(cache_file(record.key), cache_file("x" * 24))
    assert read_cached("x" * 24) is None  # another key's record under this name
    os.mkfifo(cache_file(record.key))
    assert read_cached(record.key) is None  # and no hang on a FIFO


def test_the_reference_is_measured_for_comparison_but_chosen_only_when_asked_for() -> None:
    """Before: paths = ["torch-fp16"] (unavailable here) served torch-fp32, which was not asked for."""
    with pytest.raises(ModelLoadError, match="no path runs here"):
        choose("k" * 24, "w" * 16, ROWS, 0.99, time.time(), ["torch-fp16"])
    assert choose("k" * 24, "w" * 16, ROWS, 0.98, time.time(), ["onnx-int8"]).chosen == "onnx-int8"


class Measured(Exception):
    pass


def _fake_version(tmp_path: Path):  # type: ignore[no-untyped-def]
    from hotswapd.config.schema import VersionConfig

    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return model, VersionConfig(backend="auto", source=str(model))


def test_a_cached_record_that_disagrees_with_its_key_is_measured_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a row's options in the file (pooling, max_seq_length) reached the backend, and
    the version computed something else under the same fingerprint."""
    model, version = _fake_version(tmp_path)
    monkeypatch.setattr(tuning_run, "_measure", lambda *args: ROWS)
    record = tuned(model, version)
    assert record.chosen == "onnx-fp32" and tuned(model, version) == record  # cached

    def measured(*args: object) -> None:
        raise Measured

    monkeypatch.setattr(tuning_run, "_measure", measured)
    file = cache_file(record.key)
    good = file.read_bytes()
    for bad in (good.replace(b'"options": {}', b'"options": {"pooling": "cls", "max_seq_length": 3}', 1), good.replace(b'"min_cosine": 0.99,\n "min_spearman"', b'"min_cosine": 0.5,\n "min_spearman"')):
        assert bad != good
        file.write_bytes(bad)
        with pytest.raises(Measured):
            tuned(model, version)


def _rerank_row(path: str, rate: float, rho: float) -> PathRow:
    return PathRow(path=path, backend=PATHS[path][0], options=dict(PATHS[path][1]), status="measured", short_per_second=rate, passages_per_second=rate / 10,
                   single_p50_ms=1.0, mean_spearman=rho, min_spearman=rho)


def test_a_rerank_tuning_is_gated_by_rank_agreement_not_cosine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reranker's paths are compared by Spearman (their rows have no cosine), its key and
    record name the task, and an embedder's cached record is not taken for a reranker's."""
    rows = [_rerank_row("torch-fp32", 100.0, 1.0), _rerank_row("onnx-int8", 300.0, 0.90), _rerank_row("openvino-fp32", 160.0, 0.999)]
    record = choose("k" * 24, "w" * 16, rows, 0.95, time.time(), ALL, "rerank")
    assert record.task == "rerank" and record.min_spearman == 0.95 and record.min_cosine is None
    assert record.chosen == "openvino-fp32" and "short pairs (160/s, 1.60x torch-fp32)" in record.reason and "Spearman >= 0.95" in record.reason
    assert choose("k" * 24, "w" * 16, rows, 0.85, time.time(), ALL, "rerank").chosen == "onnx-int8"
    with pytest.raises(ModelLoadError, match="no path runs here at min_spearman 1.0"):
        choose("k" * 24, "w" * 16, rows[1:], 1.0, time.time(), ALL, "rerank")
    with pytest.raises(ModelLoadError):  # an embedder's rows carry no Spearman: nothing passes a rerank gate
        choose("k" * 24, "w" * 16, ROWS, 0.5, time.time(), ALL, "rerank")
    from hotswapd.config.schema import VersionConfig

    model, embed_version = _fake_version(tmp_path)
    rerank_version = VersionConfig(backend="auto", task="rerank", source=str(model))
    assert tuning_run.settings(rerank_version) == (["torch-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16", "openvino-int8"], 0.95)
    monkeypatch.setattr(tuning_run, "_measure", lambda *args: ROWS)
    embedded = tuned(model, embed_version)
    monkeypatch.setattr(tuning_run, "_measure", lambda *args: rows)
    reranked = tuned(model, rerank_version)
    assert reranked.key != embedded.key and reranked.chosen == "openvino-fp32"
    write_cached(reranked.model_copy(update={"key": embedded.key}))  # a reranker's record under an embedder's key
    monkeypatch.setattr(tuning_run, "_measure", lambda *args: ROWS)
    assert tuned(model, embed_version).task == "embed"  # measured again, not trusted


def test_a_choice_that_cannot_be_cached_is_still_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Before: a read-only or blocked cache failed the load after the whole measurement."""
    model, version = _fake_version(tmp_path)
    monkeypatch.setattr(tuning_run, "_measure", lambda *args: ROWS)
    (tmp_path / "cache" / "hotswapd").mkdir(parents=True)
    (tmp_path / "cache" / "hotswapd" / "tuning").write_text("a file where the directory goes")
    assert tuned(model, version).chosen == "onnx-fp32"
    assert "could not be cached" in caplog.text


def test_spearman_gives_ties_their_average_rank() -> None:
    """Before: ties were broken by position, so a scorer giving every document the same
    score (a zeroed classifier) agreed 1.0 with any order."""
    import numpy as np

    from hotswapd.backends.cross_encoder_export import spearman

    order = np.arange(8.0)
    assert spearman(order, np.zeros(8)) == 0.0 and spearman(np.zeros(8), np.zeros(8)) == 1.0
    assert spearman(order, order * 2) == pytest.approx(1.0) and spearman(order, -order) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833)  # scipy's value
    assert np.isnan(spearman(order, np.full(8, np.nan)))


def test_a_rerank_version_naming_paths_a_cross_encoder_cannot_run_is_refused_and_records_are_bounded(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from hotswapd.config.schema import VersionConfig

    model, _ = _fake_version(tmp_path)
    wrong = VersionConfig(backend="auto", task="rerank", source=str(model), paths=["torch-bf16", "onnx-int8"])
    with pytest.raises(ModelLoadError, match="torch-bf16 cannot run a cross-encoder"):
        tuning_run.settings(wrong)
    with pytest.raises(ValidationError):
        _rerank_row("onnx-int8", 10.0, 5.0)  # a Spearman past 1: a hand-edited record
    with pytest.raises(ValidationError):
        _rerank_row("onnx-int8", -10.0, 0.5)
