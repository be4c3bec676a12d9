"""The local backends (onnx, transformers, a plugin) on a real daemon, against sentence-transformers in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.errors import ModelLoadError
from tests.daemons import RunningDaemon, serving, write_config

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

TEXTS = [
    "The bank raised rates.",
    "  leading and trailing spaces  ",
    "A much longer sentence about the weather, the markets, football, elections and music festivals " * 3,
    "short",
    "Der schnelle braune Fuchs.",
]
PLUGIN_DIR = Path(__file__).parent / "plugin"


def st_reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def onnx_sees_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin package, really installed (pip) into a directory of its own."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(PLUGIN_DIR)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backends")


def backends_config(workdir: Path, tiny: Path) -> Path:
    return write_config(
        workdir / "config.toml",
        f"""
[models.tiny]
active = "st"
[models.tiny.versions.st]
source = "{tiny}"
[models.tiny.versions.onnx]
backend = "onnx"
source = "{tiny}"
[models.tiny.versions.int8_strict]
backend = "onnx"
source = "{tiny}"
quantize = "int8"
min_cosine = 0.999999
[models.tiny.versions.mean]
backend = "transformers"
source = "{tiny}"
pooling = "mean"
[models.tiny.versions.cls]
backend = "transformers"
source = "{tiny}"
pooling = "cls"
normalize = false
[models.tiny.versions.gpu]
backend = "onnx"
source = "{tiny}"
device = "cuda"
[models.tiny.versions.gpu_or_cpu]
backend = "onnx"
source = "{tiny}"
device = "cuda"
fallback = "cpu"

[models.plugged]
active = "v1"
[models.plugged.versions.v1]
backend = "letter-counts"
source = "{tiny}"
scale = 2.0
""",
    )


def start(workdir: Path, tiny: Path, plugin_site: Path) -> AbstractContextManager[RunningDaemon]:
    env = {"XDG_CACHE_HOME": str(workdir / "cache"), "PYTHONPATH": os.pathsep.join([str(plugin_site), str(Path.cwd())])}
    return serving(backends_config(workdir, tiny), workdir, extra_env=env)


@pytest.fixture(scope="module")
def daemon(workdir: Path, tiny_model: Path, plugin_site: Path) -> Iterator[RunningDaemon]:
    with start(workdir, tiny_model, plugin_site) as daemon:
        yield daemon


@pytest.fixture()
def client(daemon: RunningDaemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


def test_onnx_export_matches_sentence_transformers(client: Client, tiny_model: Path) -> None:
    loaded = client.preload("tiny@onnx")
    assert loaded["backend"] == "onnx" and loaded["details"]["exported_now"] is True
    assert loaded["details"]["check"]["mean_cosine"] >= 0.9999
    got = client.encode(TEXTS, "tiny@onnx").embeddings
    assert cosines(got, st_reference(tiny_model, TEXTS)).min() >= 0.9999


def test_onnx_split_request_runs_on_tokens_from_the_tokens_pool(client: Client, tiny_model: Path) -> None:
    """A request larger than a batch is tokenised on the tokens pool and the model runs on
    those tokens (issue 28): its rows match the same texts sent in requests small enough to
    be tokenised on the inference thread, and sentence-transformers'."""
    texts = [(f"word{i} " * (1 + (i * 7) % 60)).strip() + ", and more." for i in range(150)]
    whole = client.encode(texts, "tiny@onnx").embeddings
    parts = np.concatenate([client.encode(texts[at : at + 50], "tiny@onnx").embeddings for at in range(0, 150, 50)])
    assert cosines(whole, parts).min() >= 0.99999
    assert cosines(whole, st_reference(tiny_model, texts)).min() >= 0.9999


def test_onnx_tokenising_beside_an_encode_leaves_both_alone(tiny_model: Path) -> None:
    """The tokens pool tokenises with the same tokenizer the inference thread encodes with."""
    import threading

    from hotswapd.backends import get_loader
    from hotswapd.config.schema import VersionConfig

    spec = VersionConfig.model_validate({"backend": "onnx", "source": str(tiny_model), "device": "cpu"})
    embedder = get_loader("onnx")(tiny_model, spec)
    texts = [("word " * n).strip() for n in (1, 3, 40, 7, 300, 2, 15, 60)]
    expected = embedder.encode(texts, normalize=True)
    stop, failures = threading.Event(), []

    def tokenise() -> None:
        while not stop.is_set():
            try:
                assert [len(tokens) for tokens in embedder.tokenize(texts)] == [3, 5, 42, 9, embedder.max_tokens, 4, 17, 62]
            except Exception as exc:  # noqa: BLE001 -- collected for the assertion below
                failures.append(exc)

    # What waits in the queue is compact: int32 ids and type ids, not tokenizers' Encodings
    # (token strings, offsets and the windows truncation cut off: ~60x the text's size).
    held = embedder.tokenize(texts)
    assert all(not hasattr(tokens, "__dict__") and tokens.ids.dtype == np.int32 for tokens in held)
    assert sum(tokens.ids.nbytes + tokens.type_ids.nbytes for tokens in held) == 8 * sum(len(tokens) for tokens in held)
    other = threading.Thread(target=tokenise)
    other.start()
    try:
        for _ in range(30):
            np.testing.assert_allclose(embedder.encode_tokens(embedder.tokenize(texts), normalize=True), expected, atol=1e-6)
            np.testing.assert_allclose(embedder.encode(texts, normalize=True), expected, atol=1e-6)
    finally:
        stop.set()
        other.join()
    assert not failures, failures[:3]


def test_transformers_mean_pooling_matches_sentence_transformers(client: Client, tiny_model: Path) -> None:
    got = client.encode(TEXTS, "tiny@mean").embeddings
    assert cosines(got, st_reference(tiny_model, TEXTS)).min() >= 0.9999


def test_transformers_cls_pooling_is_the_first_token(client: Client, tiny_model: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModel.from_pretrained(str(tiny_model)).eval()
    with torch.inference_mode():
        batch = tokenizer([t.strip() for t in TEXTS], padding=True, truncation=True, max_length=128, return_tensors="pt")
        expected = model(**batch).last_hidden_state[:, 0].numpy()
    got = client.encode(TEXTS, "tiny@cls").embeddings
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_switch_between_backends_passes_the_space_guard(client: Client) -> None:
    # Same weights, same tokenizer, same pooling: onnx and sentence-transformers share a space.
    assert client.switch("tiny", "onnx")["outcome"] == "done"
    assert client.encode(["after the switch"], "tiny").version == "onnx"
    client.switch("tiny", "st")


def test_int8_below_min_cosine_is_refused_and_nothing_else_changes(client: Client) -> None:
    before = client.encode(["still here"], "tiny").embeddings.copy()
    with pytest.raises(ModelLoadError, match=r"int8 ONNX export .* below min_cosine 0.999999: refused"):
        client.preload("tiny@int8_strict")
    np.testing.assert_array_equal(client.encode(["still here"], "tiny").embeddings, before)


def test_cuda_without_a_gpu_fails_clearly_or_falls_back(client: Client) -> None:
    if onnx_sees_cuda():
        assert client.preload("tiny@gpu")["device"] == "cuda"
    else:
        with pytest.raises(ModelLoadError, match="device 'cuda' was requested but onnxruntime sees no CUDA device"):
            client.preload("tiny@gpu")
    assert client.preload("tiny@gpu_or_cpu")["device"] == ("cuda" if onnx_sees_cuda() else "cpu")


def test_plugin_backend_from_an_entry_point(client: Client, plugin_site: Path) -> None:
    sys.path.insert(0, str(plugin_site))
    try:
        from letter_counts import letter_vector
    finally:
        sys.path.remove(str(plugin_site))
    got = client.encode(["abc", "hello"], "plugged", normalize=False)
    np.testing.assert_array_equal(got.embeddings, np.stack([letter_vector("abc", 2.0), letter_vector("hello", 2.0)]))


def test_export_cache_is_reused_by_the_next_start(daemon: RunningDaemon, workdir: Path, tiny_model: Path, plugin_site: Path) -> None:
    with daemon.client() as client:
        first = client.preload("tiny@onnx")["details"]
    exported = Path(first["onnx_file"])
    stat_before = exported.stat()
    assert daemon.stop() == 0, daemon.log()
    with start(workdir, tiny_model, plugin_site) as again, again.client() as client:
        second = client.preload("tiny@onnx")["details"]
        assert second["onnx_file"] == first["onnx_file"] and second["exported_now"] is False
        stat_after = exported.stat()
        assert (stat_after.st_ino, stat_after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)
        assert client.encode(["cached export"], "tiny@onnx").embeddings.shape == (1, 32)


@pytest.mark.parametrize("backend", ["sentence-transformers", "transformers"])
def test_counting_tokens_beside_an_encode_leaves_the_encode_alone(tiny_model: Path, backend: str) -> None:
    """The tokens pool counts (HTTP usage, long texts) while the inference thread encodes.
    A Hugging Face fast tokenizer sets truncation and padding on its shared Rust object at
    every call: counting on the encoder's own tokenizer made its batches ragged ("Unable to
    create tensor"), which failed requests under the HTTP benchmark."""
    import threading

    from hotswapd.backends import get_loader
    from hotswapd.config.schema import VersionConfig

    spec = VersionConfig.model_validate({"backend": backend, "source": str(tiny_model), "device": "cpu"})
    embedder = get_loader(backend)(tiny_model, spec)
    texts = [("word " * n).strip() for n in (1, 3, 40, 7, 90, 2, 15, 60)]
    stop, failures = threading.Event(), []

    def count() -> None:
        while not stop.is_set():
            try:
                assert embedder.count_tokens(texts)[2] == 42  # 40 words + [CLS] + [SEP]
                embedder.token_windows(texts[4], 16, 4)
            except Exception as exc:  # noqa: BLE001 -- collected for the assertion below
                failures.append(exc)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for _ in range(60):
            assert embedder.encode(texts, normalize=True).shape[0] == len(texts)
    finally:
        stop.set()
        counter.join()
    assert not failures, failures[:3]
