"""The sagemaker backend against a local server that speaks the SageMaker runtime protocol."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.errors import InferenceError, ModelLoadError
from tests.daemons import RunningDaemon, serving, write_config
from tests.sagemaker_server import SageMakerServer
from tests.test_backends import TEXTS, cosines, st_reference

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
RETRIES = 2


@pytest.fixture(scope="module")
def endpoint_server(tiny_model: Path) -> Iterator[SageMakerServer]:
    server = SageMakerServer(tiny_model, slow_seconds=3.0).start()
    server.modes["embed"] = "ok"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, endpoint_server: SageMakerServer) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("sagemaker")
    common = f'backend = "sagemaker"\nsource = "{tiny_model}"\nendpoint_url = "{endpoint_server.url}"\nregion = "us-east-1"\n'
    config = write_config(
        workdir / "config.toml",
        f"""
[models.remote]
active = "v1"
[models.remote.versions.v1]
{common}endpoint = "embed"
timeout_seconds = 1.0
retries = {RETRIES}
[models.remote.versions.rechecked]
{common}endpoint = "embed"
recheck_seconds = 0.5
[models.remote.versions.gone]
{common}endpoint = "no-such-endpoint"
retries = 0

[models.local]
active = "v1"
[models.local.versions.v1]
source = "{tiny_model}"
""",
    )
    with serving(config, workdir, extra_env=AWS_TEST_ENV) as daemon:
        yield daemon


@pytest.fixture()
def client(daemon: RunningDaemon, endpoint_server: SageMakerServer) -> Iterator[Client]:
    endpoint_server.modes["embed"] = "ok"
    with daemon.client() as c:
        yield c
    endpoint_server.modes["embed"] = "ok"


def test_remote_vectors_match_sentence_transformers(client: Client, tiny_model: Path) -> None:
    loaded = client.preload("remote")
    assert loaded["device"] == "remote" and loaded["memory_bytes"] == 0
    got = client.encode(TEXTS, "remote").embeddings
    assert cosines(got, st_reference(tiny_model, TEXTS)).min() >= 0.9999


def test_a_missing_endpoint_fails_the_load_clearly(client: Client) -> None:
    with pytest.raises(ModelLoadError, match=r"endpoint 'no-such-endpoint' answered HTTP 400: Endpoint no-such-endpoint not found"):
        client.preload("remote@gone")
    assert client.encode(["others keep serving"], "local").embeddings.shape == (1, 32)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error500", r"endpoint 'embed' answered HTTP 500: internal failure in the model container"),
        ("slow", r"endpoint 'embed' unreachable: Read timeout"),
        ("badjson", r"endpoint 'embed' answered invalid JSON: b'<html>not json</html>'"),
    ],
)
def test_endpoint_failures_are_typed_errors_and_the_daemon_keeps_serving(
    client: Client, endpoint_server: SageMakerServer, mode: str, message: str
) -> None:
    client.preload("remote")
    endpoint_server.modes["embed"] = mode
    calls_before = endpoint_server.calls["embed"]
    with pytest.raises(InferenceError, match=message):
        client.encode([f"a text for {mode}"], "remote")
    if mode != "badjson":  # 5xx and timeouts are retried; a 200 with a bad body is not
        assert endpoint_server.calls["embed"] - calls_before == RETRIES + 1
    endpoint_server.modes["embed"] = "ok"
    assert np.isfinite(client.encode([f"after {mode}"], "remote").embeddings).all()
    assert client.encode(["local too"], "local").embeddings.shape == (1, 32)


def test_a_model_changed_behind_the_endpoint_changes_the_fingerprint(client: Client, endpoint_server: SageMakerServer) -> None:
    first = client.encode(["the same text"], "remote@rechecked")
    endpoint_server.modes["embed"] = "upgraded"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the re-check runs every 0.5 s on its own thread
        second = client.encode(["the same text"], "remote@rechecked")
        if second.fingerprint != first.fingerprint:
            break
        time.sleep(0.2)
    assert second.fingerprint != first.fingerprint
    assert not np.allclose(second.embeddings, first.embeddings)  # not the old model's vectors from the cache
