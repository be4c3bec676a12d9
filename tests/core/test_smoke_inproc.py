"""The in-process depth itself: the real daemon core serves the fake backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.core.conftest import StartDaemon
from tests.fakebackend import vector
from tests.inproc import fake_config


def test_encode_switch_and_status(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"scale": 1.0}, "v2": {"scale": 2.0}})
    with start(config) as daemon, daemon.client() as client:
        result = client.encode(["hello", "world"])
        assert (result.model, result.version, result.count, result.dim) == ("m", "v1", 2, 8)
        expected = vector("hello", 1.0, 8)
        np.testing.assert_allclose(result.embeddings[0], expected / np.linalg.norm(expected), rtol=1e-6)
        assert client.switch("m", "v2")["outcome"] == "done"
        assert client.encode(["hello"]).version == "v2"
        assert client.status()["phase"] == "ready"
        assert client.encode(["hello"]).cached == 1


def test_preload_loads_a_version_that_does_not_serve_too(start: StartDaemon, tmp_path: Path) -> None:
    """`preload = true` on a version that was not active was skipped without a word
    (issue 29): a user who writes it expects the version loaded, to switch to at once."""
    from tests.fakebackend import CONTROLS

    config = fake_config(tmp_path, {"v1": {"preload": True}, "v2": {"preload": True}, "v3": {}})
    with start(config) as daemon, daemon.client() as client:
        assert CONTROLS["v1"].loads == 1 and CONTROLS["v2"].loads == 1 and CONTROLS["v3"].loads == 0
        models = client.models()[0]
        assert models["loaded_versions"] == ["v1", "v2"]
