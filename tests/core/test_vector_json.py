"""Vectors written as JSON (hs encode -f json/jsonl, file jobs to .jsonl) read back as the
very float32 values the daemon sent, on both writers: orjson's for replies of many rows
(issue 28: a Python float each cost the hs process 182 ms per 2,000 rows, taken from the
daemon on 2 cores) and 9 significant digits for a few."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotswapd.client.encode_result import FAST_JSON_ROWS, EncodeResult
from hotswapd.wire.protocol import VECTOR_DTYPE


def _result(vectors: np.ndarray) -> EncodeResult:
    header = {"model": "m", "version": "v", "dim": vectors.shape[1], "count": vectors.shape[0], "dtype": VECTOR_DTYPE}
    return EncodeResult(header, memoryview(np.ascontiguousarray(vectors, dtype="<f4").tobytes()))


@pytest.mark.parametrize("count", [1, FAST_JSON_ROWS - 1, FAST_JSON_ROWS, 200])
def test_json_rows_read_back_as_the_same_float32_values(count: int) -> None:
    rng = np.random.default_rng(count)
    vectors = (rng.standard_normal((count, 24)) / 7).astype(np.float32)
    vectors[0, :6] = [1e-45, -3.4028235e38, -0.0, 1.0, 1.1754944e-38, 0.1]  # a denormal, the extremes, a signed zero
    rows = _result(vectors).json_rows()
    assert len(rows) == count
    back = np.array([json.loads(row) for row in rows], dtype=np.float32)
    assert back.tobytes() == vectors.tobytes()  # bit for bit, the signed zero included
