"""A real cross-encoder (tiny, random, built locally) served as a rerank version: the
daemon's scores are sentence-transformers' CrossEncoder scores, through the Python client,
`hs rerank`, Cohere's own SDK on /v2/rerank, and TEI's /rerank shape."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import numpy as np
import pytest

from hotswapd.tuning.run_paths import RERANK_PATHS
from tests.conftest import HS, run_hs
from tests.daemons import RunningDaemon, daemon_env, serving, write_config
from tests.tinymodel import build_tiny_cross_encoder

pytestmark = pytest.mark.slow
QUERY = "what do cats eat"
DOCUMENTS = ["Cats eat fish and meat.", "The central bank raised interest rates.", "Kittens drink milk.", "Ünïcödé 🚀 text " * 30]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-ce", seed=3)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, cross_encoder: Path) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("rerank-real")
    config = write_config(workdir / "config.toml", f"""
[http]
listen = "127.0.0.1:0"
[daemon]
default_model = "rr"
[models.rr]
active = "v1"
[models.rr.versions.v1]
task = "rerank"
source = "{cross_encoder}"
device = "cpu"
preload = true
[models.rr.versions.onnx]
task = "rerank"
backend = "onnx"
source = "{cross_encoder}"
[models.rr.versions.onnx-int8]
task = "rerank"
backend = "onnx"
source = "{cross_encoder}"
quantize = "int8"
min_spearman = -1.0  # random weights score every pair alike: int8 noise reorders them; a real model is gated at 0.95
[models.rr.versions.openvino]
task = "rerank"
backend = "openvino"
source = "{cross_encoder}"
[models.rr.versions.openvino-int8]
task = "rerank"
backend = "openvino"
source = "{cross_encoder}"
precision = "int8"
min_spearman = -1.0
[models.rr.versions.auto]
task = "rerank"
backend = "auto"
source = "{cross_encoder}"
min_spearman = -1.0
""")
    with serving(config, workdir) as running:
        yield running


@pytest.fixture(scope="module")
def expected(cross_encoder: Path) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(cross_encoder), device="cpu", local_files_only=True)
    return np.asarray(model.predict([(QUERY, document) for document in DOCUMENTS]), dtype=np.float64)


def by_index(results: list[dict], field: str) -> np.ndarray:
    scores = np.zeros(len(DOCUMENTS))
    for hit in results:
        scores[hit["index"]] = hit[field]
    return scores


def test_the_client_and_hs_rerank_give_crossencoders_scores(daemon: RunningDaemon, expected: np.ndarray) -> None:
    with daemon.client() as client:
        answer = client.rerank(QUERY, DOCUMENTS)
        raw = client.rerank(QUERY, DOCUMENTS, raw_scores=True)
    assert answer["version"] == "v1" and answer["fingerprint"]
    np.testing.assert_allclose(by_index(answer["results"], "score"), expected, atol=1e-5)
    assert [hit["index"] for hit in answer["results"]] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose(1 / (1 + np.exp(-by_index(raw["results"], "score"))), expected, atol=1e-5)
    done = subprocess.run([str(HS), "rerank", QUERY, *DOCUMENTS, "-f", "json", "--top", "2"], capture_output=True,
                          env=daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1"), timeout=120)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert len(shown["results"]) == 2 and all(abs(hit["score"] - expected[hit["index"]]) < 1e-5 for hit in shown["results"])
    assert shown["results"][0]["document"] == DOCUMENTS[int(np.argmax(expected))]


def test_cohere_sdk_and_tei_shape_get_the_same_scores(daemon: RunningDaemon, expected: np.ndarray) -> None:
    with daemon.client() as client:
        url = str(client.status()["http"])
    with httpx.Client(timeout=60) as http:  # closed here: the SDK's own would be left to the garbage collector
        api = cohere.ClientV2(api_key="unused", base_url=url, max_retries=0, httpx_client=http)
        answer = api.rerank(model="rr", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert len(answer.results) == 3
    assert all(abs(item.relevance_score - expected[item.index]) < 1e-5 for item in answer.results)
    tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True}, timeout=60)
    assert tei.status_code == 200 and tei.headers["X-Hotswap-Version"] == "v1"
    np.testing.assert_allclose(by_index(tei.json(), "score"), expected, atol=1e-5)
    assert {item["text"] for item in tei.json()} == set(DOCUMENTS)
    cohere_v1 = httpx.post(f"{url}/v1/rerank", json={"model": "rr", "query": QUERY, "documents": [{"text": d} for d in DOCUMENTS], "return_documents": True}, timeout=60)
    body = cohere_v1.json()
    assert body["model"] == "rr@v1" and body["usage"]["total_tokens"] > 0 and body["results"][0]["document"]["text"] in DOCUMENTS
    refused = httpx.post(f"{url}/v1/embeddings", json={"model": "rr", "input": "x"}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "wrong_task"


def test_onnx_rerank_versions_export_check_and_score_like_torch(daemon: RunningDaemon, expected: np.ndarray) -> None:
    with daemon.client() as client:
        fp32 = client.rerank(QUERY, DOCUMENTS, "rr@onnx")
        int8 = client.rerank(QUERY, DOCUMENTS, "rr@onnx-int8")
        details = {item["version"]: item for item in client.models()[0]["version_detail"]}
        switched = client.switch("rr", "onnx")  # the same task: a switch like any other
    np.testing.assert_allclose(by_index(fp32["results"], "score"), expected, atol=1e-5)
    np.testing.assert_allclose(by_index(int8["results"], "score"), expected, atol=1e-3)
    assert (fp32["version"], int8["version"]) == ("onnx", "onnx-int8")
    assert details["onnx-int8"]["state"] == "loaded"
    assert details["onnx"]["state"] == "loaded" and switched["outcome"] == "done"


def test_openvino_rerank_versions_convert_check_and_score_like_torch(daemon: RunningDaemon, expected: np.ndarray) -> None:
    with daemon.client() as client:
        fp32 = client.rerank(QUERY, DOCUMENTS, "rr@openvino")
        int8 = client.rerank(QUERY, DOCUMENTS, "rr@openvino-int8")
        details = {item["version"]: item for item in client.models()[0]["version_detail"]}
    np.testing.assert_allclose(by_index(fp32["results"], "score"), expected, atol=1e-5)
    # NNCF quantises activations too (calibrated on pairs): a little further from fp32 than ONNX's weights-only int8.
    np.testing.assert_allclose(by_index(int8["results"], "score"), expected, atol=2e-3)
    assert (fp32["version"], int8["version"]) == ("openvino", "openvino-int8")
    assert details["openvino-int8"]["state"] == "loaded"


def test_hs_tune_measures_a_rerank_version_by_rank_agreement_and_auto_serves_the_choice(daemon: RunningDaemon, expected: np.ndarray) -> None:
    done = run_hs("tune", "rr@auto", "--json", endpoint=daemon.endpoint, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    record = json.loads(done.stdout)["tuning"]
    rows = {row["path"]: row for row in record["rows"]}
    assert record["task"] == "rerank" and record["min_spearman"] == -1.0
    assert set(rows) == set(RERANK_PATHS)  # a cross-encoder runs in fp32 on torch: no torch bf16/fp16 rows
    for name in ("torch-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        assert rows[name]["status"] == "measured" and rows[name]["short_per_second"] > 0, rows[name]
        assert rows[name]["mean_cosine"] is None and rows[name]["min_spearman"] is not None
    assert rows["torch-fp32"]["min_spearman"] == 1.0 and rows["onnx-fp32"]["min_spearman"] > 0.99
    measured = [row for row in record["rows"] if row["status"] == "measured"]
    assert record["chosen"] == max(measured, key=lambda row: row["short_per_second"])["path"]
    table = run_hs("tune", "rr@auto", endpoint=daemon.endpoint, env={"COLUMNS": "120"})
    assert table.returncode == 0 and "\trho_mean\t" in table.stdout.decode() and f"chosen: {record['chosen']}" in table.stderr.decode()
    with daemon.client() as client:
        served = client.rerank(QUERY, DOCUMENTS, "rr@auto")
        detail = next(item for item in client.models()[0]["version_detail"] if item["version"] == "auto")
    assert detail["path"] == record["chosen"]
    np.testing.assert_allclose(by_index(served["results"], "score"), expected, atol=2e-3)
