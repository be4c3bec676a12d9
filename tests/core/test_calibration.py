"""Int8/uint8 calibration: measured after a load, asked for with the rows; what cannot
have it is refused, typed, before the model runs (found by a hostile review)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hotswapd.errors import RequestError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config

TEXTS = ["first text", "second text", "third"]


def test_a_request_right_after_a_load_waits_for_the_calibration_even_when_cached(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {"dim": 16}})) as daemon, daemon.client() as client:
        first = client.encode(TEXTS, ranges=True)  # every row now in the cache
        client.evict("m")
        gate = threading.Event()
        fakebackend.CONTROLS["v1"].calibration_gate = gate
        client.preload("m")  # loaded again: its calibration waits on the gate
        answers: list[object] = []
        asking = threading.Thread(target=lambda: answers.append(_encode(daemon, TEXTS)))
        asking.start()
        asking.join(0.5)
        assert asking.is_alive()  # not answered from the cache with "no calibration yet"
        gate.set()
        asking.join(30)
        (again,) = answers
        assert not isinstance(again, Exception), again
        assert again.calibration == first.calibration and again.ranges is not None  # type: ignore[union-attr]


def _encode(daemon: object, texts: list[str]) -> object:
    try:
        with daemon.client() as own:  # type: ignore[attr-defined]
            return own.encode(texts, ranges=True)
    except Exception as exc:  # noqa: BLE001 -- handed to the test
        return exc


def test_what_has_no_calibration_is_refused_before_the_model_runs(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"dim": 16}}) + """
[models.ens]
active = "v1"
[models.ens.versions.v1]
backend = "ensemble"
members = [{ model = "m", version = "v1" }]
"""
    with start(config) as daemon, daemon.client() as client:
        before = fakebackend.CONTROLS["v1"].encodes
        with pytest.raises(RequestError, match="ens@v1 gives no int8/uint8 output here: ensemble versions have no calibration"):
            client.encode(TEXTS, "ens", ranges=True)
        with pytest.raises(RequestError, match="calibration is of normalized vectors"):
            client.encode(TEXTS, "m", ranges=True, normalize=False)
        assert fakebackend.CONTROLS["v1"].encodes == before  # refused before any model ran
        with pytest.raises(RequestError, match="token details are listed for at most 256 texts"):
            client.count_tokens([f"text {i}" for i in range(300)], "m", details=True)
        assert client.count_tokens([f"text {i}" for i in range(300)], "m")["total"] > 0  # counts alone are not bounded so


def test_a_compact_copy_is_written_only_for_a_finished_corpus(tmp_path: Path) -> None:
    import numpy as np

    from hotswapd.corpus.compact_index import write_compact
    from hotswapd.corpus.files import MATRIX, CorpusError

    partial = tmp_path / "partial"
    partial.mkdir()
    np.save(partial / MATRIX, np.ones((4, 8), dtype="<f4"))  # a build in progress: no manifest yet
    with pytest.raises(CorpusError, match="not a finished corpus"):
        write_compact(partial, "binary")
    assert sorted(path.name for path in partial.iterdir()) == [MATRIX]
