"""The daemon's configuration: TOML in, frozen typed objects out.

The schema has model *versions* from the start; this release serves each model's
``active`` version. Validation happens once, here, and every error names the file, the
key and the problem. Nothing else in hotswap reads the TOML or the environment for
settings.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hotswapd.config.alerts_section import AlertsConfig
from hotswapd.text.preprocess import Preprocessor
from hotswapd.text.prompts import MAX_PROMPT_NAME, MAX_PROMPT_TEXT
from hotswapd.backends import backend_names, options_schema
from hotswapd.config.bench_section import BenchConfig
from hotswapd.config.ensemble_section import ENSEMBLE, member_problems
from hotswapd.config.ensemble_section import Options as EnsembleOptions
from hotswapd.config.strict_json import json_object
from hotswapd.errors import ConfigError
from hotswapd.config.fleet_section import FleetConfig
from hotswapd.config.http_section import HttpConfig
from hotswapd.sources.resolve import parse_source

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_MODEL_NAME = "minilm"
# Built-in backends that compute vectors only (a rerank version names another).
# Versions whose vectors get no int8/uint8 calibration at load (hotswapd.calibration): a
# remote endpoint (a paid call per load) and an ensemble (its members have theirs).
UNCALIBRATED_BACKENDS = frozenset({"openai", "sagemaker", "ensemble"})
EMBED_ONLY_BACKENDS = frozenset({"transformers", "openai", "sagemaker", "ensemble"})
MAX_CONFIG_BYTES = 4 * 2**20


# Version fields that only change how a loaded version is served, not its weights or its
# vectors: a config edit that touches only these is applied to the loaded version in place.
# Every other field reloads the weights.
LIVE_FIELDS = frozenset(
    {"batch_size", "max_batch_size", "max_batch_tokens", "max_wait_ms", "pinned", "ram_gb", "min_agreement", "compatible_with", "preload"}
)


class _Frozen(BaseModel):
    # allow_inf_nan: TOML's `inf` and JSON's 1e400 are not sizes or limits (max_mb = inf
    # crashed the daemon at start: OverflowError).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class NoOptions(_Frozen):
    """The options of a backend that declares none."""


class VersionConfig(_Frozen):
    """One version of a model: which backend loads which files, with which options.

    Keys beyond the common ones below belong to the backend: they are checked against the
    backend's ``Options`` model and reach it as :attr:`options`.
    """

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    backend: str = "sentence-transformers"
    source: str | None = None  # required, except by an ensemble (hotswapd.ensemble)
    # What the version computes: vectors (embed), or a relevance score per (query, document)
    # pair (rerank: a cross-encoder). `hs encode` serves the one, `hs rerank` the other, and a
    # switch between the two is refused.
    task: Literal["embed", "rerank"] = "embed"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # With device = "cuda" on a machine without a GPU: fail the load (None) or run on the CPU.
    fallback: Literal["cpu"] | None = None
    # Off unless a version opts in: a model directory's own Python code runs in the daemon.
    trust_remote_code: bool = False
    normalize: bool = True
    # Prompts by name, put before a text when a request names one (`hs encode --prompt query`);
    # default: the model directory's own. default_prompt applies when a request names none.
    # preprocess: named cleaners, in order (hotswapd.text).
    prompts: dict[str, str] | None = None
    default_prompt: str | None = None
    preprocess: list[Preprocessor] = Field(default_factory=list)
    # A text over the maximum tokens: cut (and counted in the reply), refused, or embedded
    # in overlapping windows averaged by their tokens (hotswapd.pipeline.long_text).
    long_text: Literal["truncate", "error", "chunk-mean"] = "truncate"
    preload: bool = False
    max_seq_length: PositiveInt | None = None
    batch_size: PositiveInt = 32
    # This version's corpus (hotswapd.corpus): a directory `hs index build` wrote (or a bare
    # .npy matrix), as a path, package: or s3:// source. It loads, switches and rolls back
    # with the version; `hs search` scores queries against it with the same version.
    embeddings_path: str | None = None
    # Serve a corpus whose manifest names other weights (recorded in the audit log).
    accept_foreign_corpus: bool = False
    # Until this version's own corpus exists: search another version's corpus through a
    # map fitted by `hs index bridge` (a directory), if its measured recall@10 reaches
    # bridge_min_recall.
    bridge_path: str | None = None
    bridge_min_recall: float = Field(default=0.9, ge=0.0, le=1.0)
    # This version claims to give the same vectors as another version of the model (say a
    # quantised copy); a switch between them checks the claim on a probe set.
    compatible_with: str | None = None
    min_agreement: float = Field(default=0.98, ge=-1.0, le=1.0)
    # Dynamic batching; unset means the [daemon] default. max_batch_size = 1 with
    # max_wait_ms = 0 turns batching off for this version.
    max_batch_size: PositiveInt | None = None
    max_batch_tokens: PositiveInt | None = None
    max_wait_ms: float | None = Field(default=None, ge=0, le=1000)
    # Memory: a pinned version is never evicted; ram_gb is a hint used before the first load.
    pinned: bool = False
    ram_gb: float | None = Field(default=None, gt=0)
    # The directory relative sources resolve against: the config file's (set by Config).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        known = sorted({*backend_names(), ENSEMBLE})  # an ensemble is assembled, not a backend module
        if value not in known:
            raise ValueError(f"unknown backend {value!r}; known backends: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _prompts(self) -> VersionConfig:
        for name, prefix in (self.prompts or {}).items():
            if not 0 < len(name) <= MAX_PROMPT_NAME or len(prefix) > MAX_PROMPT_TEXT:
                raise ValueError(f"prompts: name {name[:80]!r} must be 1 to {MAX_PROMPT_NAME} characters and its text at most {MAX_PROMPT_TEXT}")
        if self.default_prompt is not None and self.prompts is not None and self.default_prompt not in self.prompts:
            raise ValueError(f"default_prompt {self.default_prompt!r} is not among prompts: {', '.join(self.prompts) or 'none'}")
        return self

    @model_validator(mode="after")
    def _rerank(self) -> VersionConfig:
        if self.task != "rerank":
            return self
        if self.backend in EMBED_ONLY_BACKENDS:
            raise ValueError(f".task: rerank versions run on sentence-transformers (CrossEncoder), onnx, openvino, auto or a plugin, not backend {self.backend!r}")
        if self.long_text == "chunk-mean":
            raise ValueError(".long_text: a pair's score cannot be averaged over windows; use truncate or error")
        if self.compatible_with is not None:
            raise ValueError(".compatible_with: the agreement probe compares vectors; a rerank version has scores")
        return self

    @field_validator("source")
    @classmethod
    def _parsable_source(cls, value: str | None) -> str | None:
        if value is not None:
            parse_source(value)
        return value

    @model_validator(mode="after")
    def _backend_options(self) -> VersionConfig:
        if (self.source is None) != (self.backend == ENSEMBLE):
            raise ValueError(".source: an ensemble has members, not a source" if self.source else ".source: Field required")
        self.options  # noqa: B018 -- validates the backend's own keys now, at config load
        return self

    @property
    def options(self) -> BaseModel:
        """The backend's own keys, validated by its ``Options`` model."""
        extra = dict(self.model_extra or {})
        try:
            schema = EnsembleOptions if self.backend == ENSEMBLE else options_schema(self.backend)
        except ConfigError as exc:
            raise ValueError(exc.message) from exc
        if schema is None:
            if extra:
                raise ValueError(f".{sorted(extra)[0]}: unknown key (backend {self.backend!r} takes no options of its own)")
            return NoOptions()
        try:
            return schema.model_validate(extra)
        except ValidationError as exc:
            # Leading "." : the key path continues the version's (see _describe_validation_error).
            raise ValueError(f".{_describe_validation_error(exc)} (backend {self.backend!r})") from exc

    @property
    def member_count(self) -> int:
        """How many versions a request to this one runs (an ensemble's members; else 1)."""
        return len(self.options.members) if self.backend == ENSEMBLE else 1  # type: ignore[attr-defined]

    def resolve(self, source: str) -> Path:
        """A source spelling (this version's or one of its options') as a local path."""
        from hotswapd.sources.resolve import resolve_source

        return resolve_source(source, self._base_dir)

    def local_path(self, source: str) -> Path | None:
        """Where a plain path source points, existing or not; None for any other kind."""
        from hotswapd.sources.resolve import local_source_path

        return local_source_path(source, self._base_dir)


class RolloutConfig(_Frozen):
    """How a change of ``active`` in this file is rolled out, and the defaults of ``hs switch``."""

    strategy: Literal["immediate", "canary", "split", "gradual"] = "immediate"
    share: float = Field(default=10.0, gt=0, le=100)  # percent, for canary and split
    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0], min_length=1)
    step_seconds: float | None = Field(default=30.0, gt=0)
    step_requests: PositiveInt | None = None
    sticky: bool = False
    # Unload the previous version this long after a switch completes; None keeps it loaded
    # (an instant rollback).
    release_previous_after: float | None = Field(default=None, ge=0)

    @field_validator("steps")
    @classmethod
    def _rising_percentages(cls, steps: list[float]) -> list[float]:
        if any(not 0 < step <= 100 for step in steps) or steps != sorted(steps) or steps[-1] != 100:
            raise ValueError("steps must be rising percentages in (0, 100] ending at 100")
        return steps


class HealthConfig(_Frozen):
    """Thresholds that roll a rollout back automatically."""

    window_seconds: float = Field(default=60.0, gt=0)
    min_requests: PositiveInt = 20
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p95_ms: float | None = Field(default=None, gt=0)
    # Mean cosine between the old and new version on the probe set, checked before each
    # gradual step; None disables the quality gate.
    min_agreement: float | None = Field(default=None, ge=-1.0, le=1.0)


class ModelConfig(_Frozen):
    active: str
    versions: dict[str, VersionConfig] = Field(min_length=1)
    rollout: RolloutConfig = RolloutConfig()
    health: HealthConfig = HealthConfig()
    # Unload a version of this model after this many seconds unused (like Ollama's
    # keep_alive); None keeps it loaded. It reloads on the next request.
    ttl: float | None = Field(default=None, gt=0)

    @field_validator("versions")
    @classmethod
    def _version_names(cls, versions: dict[str, VersionConfig]) -> dict[str, VersionConfig]:
        for name in versions:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"version name {name!r} must match {NAME_PATTERN}")
        return versions

    @model_validator(mode="after")
    def _active_exists(self) -> ModelConfig:
        if self.active not in self.versions:
            raise ValueError(f"active version {self.active!r} is not among versions: {', '.join(self.versions)}")
        for name, version in self.versions.items():
            if version.compatible_with is not None and version.compatible_with not in self.versions:
                raise ValueError(f"versions.{name}.compatible_with {version.compatible_with!r} is not a version of this model")
        return self

    @property
    def active_version(self) -> VersionConfig:
        return self.versions[self.active]


class DaemonConfig(_Frozen):
    default_model: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_batch_texts: PositiveInt = 4096
    max_text_bytes: PositiveInt = 256 * 1024
    # Prometheus metrics over HTTP on 127.0.0.1:PORT; off when unset (`hs metrics` works always).
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    # Seconds of quiet after a config file change before it is applied (editors write in bursts).
    watch_debounce_seconds: float = Field(default=0.3, ge=0)
    # How often a config held in SSM Parameter Store (--config ssm:/path) is re-read.
    config_poll_seconds: float = Field(default=30.0, gt=0)
    # Threads for torch-based backends (OMP_NUM_THREADS, read when torch is imported);
    # default: one per core. Only one batch runs at a time, so backends never compete.
    torch_threads: PositiveInt | None = None
    # Dynamic batching defaults (each version may override them).
    max_batch_size: PositiveInt = 64
    max_batch_tokens: PositiveInt = 16384
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    # Admission control: encode work accepted but not yet answered, in texts and in MiB of
    # text. Past either bound a request is refused at once with a typed `busy` error (the
    # caller backs off) instead of queueing until its timeout. A lone request larger than
    # the bound is still admitted into an empty queue.
    max_queue_texts: PositiveInt = 16384
    max_queue_mb: float = Field(default=64.0, gt=0)
    # A load (resolve or download, fingerprint, export, weights) that takes longer fails with
    # a typed error; the daemon stops waiting for it (a hung network mount cannot wedge it).
    load_timeout_seconds: float = Field(default=900.0, gt=0)


class CacheConfig(_Frozen):
    """The in-memory embedding cache; max_mb = 0 turns it off."""

    max_mb: float = Field(default=256.0, ge=0)
    # A second tier in sqlite under the cache dir, kept across restarts (off by default).
    persist: bool = False
    persist_max_mb: float = Field(default=1024.0, gt=0)


class MemoryConfig(_Frozen):
    """The budget every load is checked against; None: no limit of that kind."""

    max_gb: float | None = Field(default=None, gt=0)  # the loaded versions' total
    min_free_gb: float | None = Field(default=None, ge=0)  # system memory kept available
    policy: Literal["lru", "largest"] = "lru"  # which idle, unpinned version goes first


class Config(_Frozen):
    daemon: DaemonConfig = DaemonConfig()
    cache: CacheConfig = CacheConfig()
    memory: MemoryConfig = MemoryConfig()
    http: HttpConfig = HttpConfig()
    alerts: AlertsConfig = AlertsConfig()
    bench: BenchConfig = BenchConfig()
    fleet: FleetConfig | None = None  # a member of a fleet switched together through etcd
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    # Where this config came from; None for the built-in default. Relative sources resolve
    # against this file's directory.
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for name in models:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"model name {name!r} must match {NAME_PATTERN}")
        return models

    @model_validator(mode="after")
    def _default_model_exists(self) -> Config:
        chosen = self.daemon.default_model
        if chosen is not None and chosen not in self.models:
            raise ValueError(f"daemon.default_model {chosen!r} is not a configured model")
        for model in self.models.values():
            for version in model.versions.values():
                version._base_dir = self.base_dir
        problems = member_problems(self.models)
        for spec in self.bench.versions or []:  # a typo would measure nothing, silently
            name, _, version = spec.partition("@")
            if name not in self.models or version not in self.models[name].versions:
                problems.append(f"bench.versions: {spec} is not a configured version")
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return self

    @property
    def default_model(self) -> str | None:
        """The model used when a request names none: the configured one, or the only one."""
        if self.daemon.default_model:
            return self.daemon.default_model
        return next(iter(self.models)) if len(self.models) == 1 else None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


STARTER = "starter.toml"  # beside this module: what `hs config init` writes


def starter_text() -> str:
    """The commented starter config (every key, two versions of the bundled model)."""
    return (Path(__file__).parent / STARTER).read_text(encoding="utf-8")


def builtin_default() -> Config:
    """What the daemon serves when there is no config file at all: the starter file, so
    that `hs config init` writes exactly what was served before it."""
    return parse_config(tomllib.loads(starter_text()))


def parse_config(data: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "config"
    try:
        return Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe_validation_error(exc)}") from exc
    except (ValueError, TypeError, RecursionError) as exc:  # whatever the bytes, a typed answer
        raise ConfigError(f"{where}: invalid config: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        problems.append(f"{key}{message}" if message.startswith(".") else f"{key}: {message}")
    shown = "; ".join(problems[:3])
    return shown + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def load_config(path: Path, *, missing_ok: bool = False) -> Config:
    """Read and validate a config: JSON when the file is named ``*.json`` (the design's own
    format), TOML otherwise; with ``missing_ok``, a missing file means the built-in default."""
    from hotswapd.host.safefiles import read_regular

    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)  # a FIFO or a device must not hang the reader
    except FileNotFoundError:
        if missing_ok:
            return builtin_default()
        raise ConfigError(f"{path}: no such config file") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    kind = "JSON" if Path(path).suffix.lower() == ".json" else "TOML"
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not content
        data = json_object(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # bad UTF-8, TOML or JSON, a 5,000-digit number, deep nesting
        raise ConfigError(f"{path}: not valid {kind}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return parse_config(data, path)
