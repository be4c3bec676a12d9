"""The daemon's `tune` op before any measuring starts: what it refuses, and its bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotswapd.errors import Busy, RequestError, UnknownVersion
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_a_version_without_local_files_to_measure_is_refused_at_once(start: StartDaemon, tmp_path: Path) -> None:
    """Before: a remote version's placeholder source went to the measurement, which failed
    after a minute with a tokenizer error about every path."""
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        with pytest.raises(RequestError, match="runs on backend 'fake': hs tune measures the ways this machine runs a local model"):
            client.tune("m@v1")
        with pytest.raises(UnknownVersion):
            client.tune("m@nope")
        assert client.ping()["pong"]


def test_a_second_tune_of_a_version_being_measured_is_told_busy(start: StartDaemon, tmp_path: Path) -> None:
    """Before: abandoned or repeated requests queued one full measurement each, without bound."""
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}, "v3": {}})) as inproc, inproc.client() as client:
        tuning = inproc.daemon._router._handlers.handler("tune").running
        tuning.add("m@v1")  # a measurement in progress
        with pytest.raises(Busy, match="already measuring m@v1"):
            client.tune("m@v1")
        tuning.add("m@v2")
        with pytest.raises(Busy):
            client.tune("m@v3")  # two at once at most
        tuning.clear()
        with pytest.raises(RequestError, match="runs on backend 'fake'"):
            client.tune("m@v3")
        assert not tuning  # released after its answer
