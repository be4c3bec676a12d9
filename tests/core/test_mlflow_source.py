"""An MLflow model registry as a source (issue 18, item 6), against a real MLflow file store:
`mlflow:models:/NAME/VERSION` and `@ALIAS`, resolved by the real client, cached per model
version; an alias moved is followed at the next load."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from hotswapd.errors import ConfigError, ModelLoadError
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store, as a test needs; sqlite needs the full mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    mlflow.set_tracking_uri(f"file://{tmp_path / 'mlruns'}")
    client = mlflow.MlflowClient()
    client.create_registered_model("tiny")
    for number in (1, 2):
        model = tmp_path / f"model{number}"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "weights.bin").write_bytes(bytes([number]) * 256)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(model), artifact_path="model")
        client.create_model_version("tiny", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("tiny", "champion", "1")
    return client


def test_a_registered_model_version_or_alias_is_served_and_a_moved_alias_followed(start: StartDaemon, tmp_path: Path, registry: object) -> None:
    config = fake_config(tmp_path, {"pinned": {"tag": "t"}, "champ": {"tag": "t"}})  # one computation: fingerprints differ by weights only
    config = config.replace(f'source = "{tmp_path / "weights" / "pinned"}"', 'source = "mlflow:models:/tiny/2"')
    config = config.replace(f'source = "{tmp_path / "weights" / "champ"}"', 'source = "mlflow:models:/tiny@champion"')
    with start(config) as inproc, inproc.client() as client:
        pinned = client.encode(["x"], "m@pinned").fingerprint
        first = client.encode(["x"], "m@champ").fingerprint
        assert first != pinned  # version 1's files, not version 2's
        registry.set_registered_model_alias("tiny", "champion", "2")  # type: ignore[attr-defined]
        client.evict("m")
        assert client.encode(["x"], "m@champ").fingerprint == pinned  # the alias now names version 2


def test_an_unknown_model_or_a_bad_spelling_is_a_clear_error(tmp_path: Path, registry: object) -> None:
    from hotswapd.config.schema import load_config
    from hotswapd.sources.resolve import resolve_source

    with pytest.raises(ModelLoadError, match="the MLflow registry says"):
        resolve_source("mlflow:models:/nope/1", tmp_path)
    with pytest.raises(ModelLoadError, match="the MLflow registry says"):
        resolve_source("mlflow:models:/tiny@nobody", tmp_path)
    (tmp_path / "c.toml").write_text('[models.m]\nactive = "v"\n[models.m.versions.v]\nsource = "mlflow:runs:/abc/model"\n')
    with pytest.raises(ConfigError, match="expected mlflow:models:/NAME/VERSION or mlflow:models:/NAME@ALIAS"):
        load_config(tmp_path / "c.toml")


def test_a_model_version_is_downloaded_once(tmp_path: Path, registry: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from hotswapd.sources.resolve import resolve_source

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = resolve_source("mlflow:models:/tiny/1", tmp_path)
    assert (path / "weights.bin").read_bytes() == bytes([1]) * 256
    shutil.rmtree(tmp_path / "mlruns" / "0")  # the run's artifacts gone: the cached copy serves
    assert resolve_source("mlflow:models:/tiny/1", tmp_path) == path
