"""The daemon's op table: the core's ops and the ones features register through the seams."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotswapd.core.handlers import CORE_OPS
from hotswapd.daemon.main import features
from hotswapd.errors import ProtocolError, UnknownOp
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_an_unknown_op_is_refused_with_the_ops_the_daemon_knows(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        with pytest.raises(UnknownOp) as refused:
            client.request("dance")
        known = refused.value.message.split("known ops: ")[1].split(", ")
        assert set(known) == {*CORE_OPS, "search", "tune", "rerank", "tokens"}  # the features' ops are in the table too
        assert client.ping()["pong"]


def test_each_op_takes_only_its_own_options(start: StartDaemon, tmp_path: Path) -> None:
    """A feature's op names its options in its registration; the core's ops keep theirs."""
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        with pytest.raises(ProtocolError, match="op 'encode' takes no option"):
            client.request("encode", options={"k": 3}, payload=[b"hello"])
        with pytest.raises(ProtocolError, match="op 'tune' takes no option"):
            client.request("tune", options={"k": 3})


def test_a_feature_op_cannot_shadow_a_core_op_or_another_feature() -> None:
    seams = features()
    with pytest.raises(ValueError, match="registered twice"):
        seams.add_op(seams.ops["search"])
