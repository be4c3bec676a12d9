"""Compact vectors through every door equal sentence-transformers' ``quantize_embeddings``
on the same float vectors (int8/uint8 with the version's calibration ranges)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import HS
from tests.daemons import RunningDaemon, daemon_env, serving, write_config
from tests.tinymodel import build_tiny_model

pytestmark = pytest.mark.slow
TEXTS = ["the bank raised rates", "a cat sat on the mat", "Ünïcödé 🚀", "stocks fell sharply on Tuesday", "short"]
PRECISIONS = ["int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("compact")
    model = build_tiny_model(workdir / "tiny", seed=5)
    config = write_config(workdir / "config.toml", f"""
[http]
listen = "127.0.0.1:0"
[models.tiny]
active = "v1"
[models.tiny.versions.v1]
source = "{model}"
device = "cpu"
preload = true
""")
    with serving(config, workdir) as running:
        yield running


def reference(floats: np.ndarray, precision: str, ranges: np.ndarray) -> np.ndarray:
    from sentence_transformers import quantize_embeddings

    return quantize_embeddings(floats, precision, ranges=ranges if precision.endswith("int8") else None)


def test_client_cli_and_http_give_quantize_embeddings_output(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        result = client.encode(TEXTS, "tiny", ranges=True)
        url = str(client.status()["http"])
        models = {row["name"]: row for row in client.models()}
    ranges = np.asarray(result.ranges, dtype=np.float32)
    assert ranges.shape == (2, result.dim) and result.calibration
    assert models["tiny"]["version_detail"][0]["calibration"]["fingerprint"] == result.calibration  # kept with the version
    floats = np.array(result.embeddings)
    for precision in PRECISIONS:
        expected = reference(floats, precision, ranges)
        got = result.compact(precision)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), precision
        done = subprocess.run([str(HS), "encode", *TEXTS, "-m", "tiny", "-f", "npy", "--dtype", precision], capture_output=True,
                              env=daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1"), timeout=120)
        assert done.returncode == 0, done.stderr
        assert np.array_equal(np.load(io.BytesIO(done.stdout)), expected), precision
        answer = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": TEXTS, "embedding_dtype": precision}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert np.array_equal(np.array([item["embedding"] for item in answer.json()["data"]], dtype=expected.dtype), expected), precision
        packed = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": TEXTS, "embedding_dtype": precision, "encoding_format": "base64"}, timeout=60)
        rows = [np.frombuffer(base64.b64decode(item["embedding"]), dtype=expected.dtype) for item in packed.json()["data"]]
        assert np.array_equal(np.stack(rows), expected), precision
    half = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": TEXTS, "embedding_dtype": "float16"}, timeout=60)
    assert np.allclose(np.array([item["embedding"] for item in half.json()["data"]]), floats.astype(np.float16).astype(np.float64))
    refused = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": TEXTS, "embedding_dtype": "int4"}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "embedding_dtype"


@pytest.mark.parametrize("suffix", ["parquet", "npy", "jsonl"])
def test_file_jobs_write_compact_rows(daemon: RunningDaemon, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"{text}\n" for text in TEXTS))
    with daemon.client() as client:
        result = client.encode(TEXTS, "tiny", ranges=True)
    env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
    for precision in ("int8", "binary"):
        output = tmp_path / f"out-{precision}.{suffix}"
        done = subprocess.run([str(HS), "encode", "-m", "tiny", "--input", str(source), "--output", str(output), "--dtype", precision],
                              capture_output=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        expected = result.compact(precision)
        if suffix == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(output)
            assert str(table.schema.field("embedding").type.value_type) == "int8"
            got = np.array(table.column("embedding").to_pylist(), dtype=expected.dtype)
        elif suffix == "npy":
            got = np.load(output)
        else:
            got = np.array([json.loads(line)["embedding"] for line in output.read_text().splitlines()], dtype=expected.dtype)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), (suffix, precision)


def test_cohere_sdk_embed_gets_every_type_it_asks_for(daemon: RunningDaemon) -> None:
    import cohere

    with daemon.client() as client:
        result = client.encode(TEXTS, "tiny", ranges=True)
        url = str(client.status()["http"])
    with httpx.Client(timeout=60) as http:  # closed here: the SDK's own would be left to the garbage collector
        api = cohere.ClientV2(api_key="unused", base_url=url, max_retries=0, httpx_client=http)
        answer = api.embed(model="tiny", texts=TEXTS, input_type="search_document", embedding_types=["float", "int8", "ubinary"])
    assert np.allclose(np.array(answer.embeddings.float_), result.embeddings, atol=1e-6)
    assert np.array_equal(np.array(answer.embeddings.int8), result.compact("int8"))
    assert np.array_equal(np.array(answer.embeddings.ubinary), result.compact("ubinary"))
