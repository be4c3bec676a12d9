"""Sources in an MLflow model registry: ``mlflow:models:/NAME/VERSION`` or ``mlflow:models:/NAME@ALIAS``.

Resolved through the real MLflow client (the ``mlflow`` extra: mlflow-skinny), against the
registry the standard variables name (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
credentials). An alias is looked up at every load, so moving ``@champion`` takes effect at
the version's next load (``hs config reload`` after an edit, or an eviction). The model
version's artifacts are downloaded once into the cache directory, named by a digest of
the registry, the name, the version number and its source, and made read-only; a later
load of the same model version reads them from there without the registry's files.

A registered sentence-transformers model is found inside what was logged: the artifact
directory itself when it holds ``modules.json`` or ``config.json``, the data directory an
``MLmodel`` file names for its ``sentence_transformers`` flavour, or a single
subdirectory that holds a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)
PREFIX = "mlflow:"
SPELLING = re.compile(r"^models:/(?P<name>[^/@]{1,256})(?:/(?P<version>[0-9]{1,9})|@(?P<alias>[A-Za-z0-9_-]{1,255}))$")
MODEL_FILES = ("modules.json", "config.json")


def check_spelling(value: str) -> str:
    """``models:/...`` of an ``mlflow:`` source, or ValueError (config validation says it)."""
    location = value[len(PREFIX) :]
    if not SPELLING.match(location):
        raise ValueError(f"source {value!r}: expected mlflow:models:/NAME/VERSION or mlflow:models:/NAME@ALIAS")
    return location


def fetch(value: str, cache_root: Path) -> Path:
    """The local model directory of an ``mlflow:`` source (downloaded now if not cached)."""
    location = check_spelling(value)
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise ModelLoadError(f"source {value!r} needs the MLflow client: pip install 'hotswap[mlflow]'") from exc
    match = SPELLING.match(location)
    assert match is not None
    name, number, alias = match["name"], match["version"], match["alias"]
    try:
        client = MlflowClient()
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        version, source = str(found.version), str(found.source)
        registry = mlflow.get_registry_uri()  # in the cache key: the same name in another registry is another model
    except MlflowException as exc:
        raise ModelLoadError(f"source {value!r}: the MLflow registry says: {str(exc).splitlines()[0][:300]}") from exc
    except Exception as exc:  # noqa: BLE001 -- a store that cannot be reached fails in many ways
        raise ModelLoadError(f"source {value!r}: the MLflow registry cannot be read: {type(exc).__name__}: {str(exc)[:300]}") from exc
    key = hashlib.sha256(json.dumps([registry, name, version, source]).encode()).hexdigest()[:20]
    final = cache_root / "mlflow" / key
    if not (final / ".complete").is_file():
        _download(final, f"models:/{name}/{version}", download_artifacts, value)
    log.info("source %s is %s version %s (%s)", value, name, version, final)
    return _model_directory(final)


def _download(final: Path, uri: str, download: Any, value: str) -> None:
    staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        download(artifact_uri=uri, dst_path=str(staging))
    except Exception as exc:  # noqa: BLE001 -- MLflow's stores raise their own errors
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"source {value!r}: downloading {uri} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    (staging / ".complete").write_text(uri)
    for path in staging.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o444)
    shutil.rmtree(final, ignore_errors=True)
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another load placed it first


def _model_directory(root: Path) -> Path:
    if any((root / name).is_file() for name in MODEL_FILES):
        return root
    flavour = _flavour_data(root)
    if flavour is not None:
        return flavour
    children = [child for child in root.iterdir() if child.is_dir() and not child.is_symlink()]
    holding = [child for child in children if any((child / name).is_file() for name in MODEL_FILES)]
    return holding[0] if len(holding) == 1 else root


def _flavour_data(root: Path) -> Path | None:
    """The data directory of a logged sentence-transformers model (its ``MLmodel`` file is YAML;
    the one line needed is read without a YAML parser)."""
    try:
        text = (root / "MLmodel").read_text(errors="replace")[: 1 << 16]
    except OSError:
        return None
    in_flavour = False
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            in_flavour = line.strip().rstrip(":") == "sentence_transformers"
        elif in_flavour and line.strip().startswith("data:"):
            data = (root / line.split(":", 1)[1].strip()).resolve()
            return data if data.is_dir() and data.is_relative_to(root.resolve()) else None
    return None
