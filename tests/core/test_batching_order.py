"""A request split into pieces is split by length (issue 16: the pipe lost ~10 % to padding
when 256 sentences were cut into pieces in document order), and still answered in order."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from hotswapd.wire.length_order import length_key
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_pieces_are_cut_by_length_and_rows_come_back_in_order(start: StartDaemon, tmp_path: Path) -> None:
    rng = random.Random(5)
    texts = [" ".join(f"w{rng.randint(0, 99)}" for _ in range(rng.randint(1, 40))) + f" #{i}" for i in range(50)]
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        result = client.encode(texts, "m", normalize=False)
        expected = np.stack([fakebackend.vector(text, 1.0, 8) for text in texts])
        np.testing.assert_array_equal(result.embeddings, expected)
        seen = fakebackend.CONTROLS["v1"].seen
        assert sorted(seen) == sorted(texts)
        lengths = [length_key(text) for text in seen]
        assert lengths == sorted(lengths, reverse=True)  # the model saw pieces of like length, longest first
