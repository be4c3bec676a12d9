"""s3:// sources and ssm: configs against moto's S3 and SSM in server mode, with the real boto3."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd.sources import s3
from hotswapd.errors import ModelLoadError
from tests.conftest import run_hs
from tests.daemons import RunningDaemon, daemon_env, serving, start_daemon, wait_for, wait_ready, write_config
from tests.test_sagemaker import AWS_TEST_ENV

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

BUCKET = "models"


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    """moto's server on a free loopback port; the environment that points boto3 at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # for the boto3 clients of this test process
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="module")
def uploaded(moto_env: dict[str, str], tiny_model: Path) -> str:
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    for file in sorted(p for p in tiny_model.rglob("*") if p.is_file()):
        client.upload_file(str(file), BUCKET, f"tiny/{file.relative_to(tiny_model)}")
    return f"s3://{BUCKET}/tiny"


def test_fetch_places_a_verified_read_only_copy(uploaded: str, tiny_model: Path, tmp_path: Path) -> None:
    local = s3.fetch(uploaded, tmp_path)
    for file in tiny_model.rglob("*"):
        if file.is_file():
            copy = local / file.relative_to(tiny_model)
            assert copy.read_bytes() == file.read_bytes()
            assert copy.stat().st_mode & 0o222 == 0
    assert s3.fetch(uploaded, tmp_path) == local  # the second call finds the cache
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.partial"))


def staged_part(uploaded: str, cache: Path, relative: str) -> Path:
    """Where an interrupted download of ``relative`` leaves its bytes."""
    objects = s3.list_objects(uploaded)
    import hashlib
    import json

    manifest = json.dumps([(obj.relative, obj.size, obj.etag) for obj in objects]).encode()
    staging = cache / "s3" / BUCKET / (hashlib.sha256(manifest).hexdigest()[:20] + ".partial")
    part = staging / (relative + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    return part


def test_an_interrupted_download_resumes(uploaded: str, tiny_model: Path, tmp_path: Path) -> None:
    weights = "model.safetensors"
    original = (tiny_model / weights).read_bytes()
    staged_part(uploaded, tmp_path, weights).write_bytes(original[: len(original) // 3])
    local = s3.fetch(uploaded, tmp_path)
    assert (local / weights).read_bytes() == original


def test_a_corrupt_download_is_refused_and_the_retry_starts_afresh(uploaded: str, tiny_model: Path, tmp_path: Path) -> None:
    weights = "model.safetensors"
    original = (tiny_model / weights).read_bytes()
    # Bytes that are not the object's: the resumed download completes the size, not the MD5.
    staged_part(uploaded, tmp_path, weights).write_bytes(b"\0" * (len(original) // 3))
    with pytest.raises(ModelLoadError, match="corrupt download .*checksum mismatch"):
        s3.fetch(uploaded, tmp_path)
    assert (s3.fetch(uploaded, tmp_path) / weights).read_bytes() == original


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://no-such-bucket/tiny", "bucket 'no-such-bucket' does not exist"),
        (f"s3://{BUCKET}/no/such/prefix", "no objects under that prefix"),
    ],
)
def test_missing_bucket_or_key_is_a_clear_error(uploaded: str, tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        s3.fetch(url, tmp_path)


@pytest.fixture(scope="module")
def s3_daemon(tmp_path_factory: pytest.TempPathFactory, uploaded: str, moto_env: dict[str, str], tiny_model: Path) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("s3daemon")
    config = write_config(
        workdir / "config.toml",
        f"""
[models.tiny]
active = "local"
[models.tiny.versions.local]
source = "{tiny_model}"
preload = true
[models.tiny.versions.s3]
source = "{uploaded}"
[models.tiny.versions.missing]
source = "s3://{BUCKET}/missing"
""",
    )
    with serving(config, workdir, extra_env={**moto_env, "XDG_CACHE_HOME": str(workdir / "cache")}) as daemon:
        yield daemon


def test_daemon_serves_a_model_from_s3(s3_daemon: RunningDaemon) -> None:
    with s3_daemon.client() as client:
        local = client.encode(["from the bucket"], "tiny@local")
        remote = client.encode(["from the bucket"], "tiny@s3")
        np.testing.assert_array_equal(remote.embeddings, local.embeddings)
        assert remote.fingerprint == local.fingerprint
        with pytest.raises(ModelLoadError, match="no objects under that prefix"):
            client.preload("tiny@missing")
        assert client.encode(["still serving"], "tiny").version == "local"


def test_config_validate_lists_s3_sources_without_downloading(s3_daemon: RunningDaemon, moto_env: dict[str, str]) -> None:
    done = run_hs("config", "validate", str(s3_daemon.config_path), env=moto_env)
    assert done.returncode == 2
    assert f"models.tiny.versions.missing.source: source s3://{BUCKET}/missing: no objects under that prefix" in done.stderr.decode()


def put_parameter(name: str, value: str) -> None:
    import boto3

    boto3.client("ssm").put_parameter(Name=name, Value=value, Type="String", Overwrite=True)


def ssm_config(tiny: Path, active: str, poll: float = 0.3) -> str:
    return f"""
[daemon]
config_poll_seconds = {poll}
[models.tiny]
active = "{active}"
[models.tiny.versions.a]
source = "{tiny}"
[models.tiny.versions.b]
source = "{tiny}"
batch_size = 8
"""


def test_config_from_ssm_is_polled_and_applied(tmp_path: Path, moto_env: dict[str, str], tiny_model: Path) -> None:
    parameter = "/hotswap/test/config"
    put_parameter(parameter, ssm_config(tiny_model, "a"))
    daemon = start_daemon(Path(f"ssm:{parameter}"), tmp_path, extra_env=moto_env)
    try:
        with daemon.client() as client:
            wait_ready(client)
            assert client.encode(["x"], "tiny").version == "a"
            put_parameter(parameter, ssm_config(tiny_model, "b"))
            wait_for(lambda: client.encode(["x"], "tiny").version, lambda v: v == "b")
            put_parameter(parameter, "[models.tiny\nbroken = ")
            status = wait_for(client.status, lambda s: s.get("config_error"))
            assert f"ssm:{parameter}: neither valid TOML nor valid JSON" in status["config_error"]
            assert client.encode(["x"], "tiny").version == "b"  # the bad value changed nothing
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_an_unreadable_parameter_stops_the_start_with_a_clear_error(moto_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hotswapd", "--socket", "ipc:///tmp/hs-ssm-missing.sock", "--config", "ssm:/hotswap/missing"],
        capture_output=True,
        env=daemon_env(**moto_env),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "ssm:/hotswap/missing: no such SSM parameter" in done.stderr.decode()


def test_a_corpus_from_s3_is_searched(uploaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """embeddings_path as an s3:// source: fetched like a model's files, then searched."""
    import boto3

    from tests.core.test_corpus import DIM, build_corpus, sentences, write_jsonl
    from tests.inproc import fake_config, inproc_daemon

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    texts = sentences(30, seed=13)
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    config = fake_config(tmp_path, {"v1": {"dim": DIM, "embeddings_path": f"s3://{BUCKET}/corpus-v1"}})
    with inproc_daemon(config, tmp_path, monkeypatch) as daemon, daemon.client() as client:
        build_corpus(client, "m@v1", source, tmp_path / "corpus")
        s3 = boto3.client("s3")
        for file in sorted((tmp_path / "corpus").iterdir()):
            s3.upload_file(str(file), BUCKET, f"corpus-v1/{file.name}")
        client.evict("m")
        answer = client.search(texts[3], "m", k=1)
        assert answer["results"][0][0]["id"] == "d3" and answer["rows"] == 30
