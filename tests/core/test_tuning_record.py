"""The tuning cache is a file on disk: whatever is in it, a load measures again rather than
trust a record that does not add up (issue 17). No torch: records are built by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hotswapd.errors import ModelLoadError
from hotswapd.tuning.record import PathRow, cache_file, eligible, read_cached, write_cached
from hotswapd.tuning.run import choose


def _row(path: str, rate: float | None, cosine: float | None, status: str = "measured") -> PathRow:
    return PathRow(path=path, backend="onnx", options={}, status=status, short_per_second=rate, passages_per_second=rate and rate / 10,
                   single_p50_ms=1.0 if rate else None, mean_cosine=cosine, min_cosine=cosine, reason=None if status == "measured" else "no")


ROWS = [_row("torch-fp32", 100.0, 1.0), _row("onnx-int8", 300.0, 0.985), _row("onnx-fp32", 150.0, 0.9999), _row("torch-fp16", None, None, "unavailable")]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_fastest_path_above_the_gate_is_chosen_and_the_reason_names_the_ratio() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, 0.0)
    assert record.chosen == "onnx-fp32"  # int8 is faster but under the gate
    assert record.reason.startswith("fastest on short texts (150/s, 1.50x torch-fp32) of 2 measured paths")
    assert [row.path for row in eligible(ROWS, 0.98)] == ["torch-fp32", "onnx-int8", "onnx-fp32"]


def test_no_path_above_the_gate_is_an_error_that_names_each_path() -> None:
    with pytest.raises(ModelLoadError, match=r"no path runs here at min_cosine 1\.0: .*onnx-int8: mean cosine 0\.985.*torch-fp16: no"):
        choose("k" * 24, "w" * 16, ROWS[1:], 1.0, 0.0)


def test_a_record_reads_back_as_written() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, 0.0)
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
    ],
)
def test_a_damaged_record_is_not_trusted(damage) -> None:  # type: ignore[no-untyped-def]
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, 0.0)
    file = write_cached(record)
    data = json.dumps(json.loads(file.read_bytes())).encode()
    assert b'"chosen": "onnx-fp32"' in data
    file.chmod(0o600)
    file.write_bytes(damage(data))
    assert read_cached(record.key) is None


def test_a_record_under_another_key_or_a_fifo_in_its_place_is_not_trusted() -> None:
    record = choose("k" * 24, "w" * 16, ROWS, 0.99, 0.0)
    write_cached(record)
    os.rename(cache_file(record.key), cache_file("x" * 24))
    assert read_cached("x" * 24) is None  # another key's record under this name
    os.mkfifo(cache_file(record.key))
    assert read_cached(record.key) is None  # and no hang on a FIFO
