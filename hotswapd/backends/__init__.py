"""The seam between the daemon and the libraries that compute embeddings.

A backend is a module with:

- ``load(path, version) -> Embedder``: ``path`` is the local directory or file the
  version's ``source`` resolved to; ``version`` is its
  :class:`~hotswapd.config.schema.VersionConfig`, whose ``options`` are the backend's own keys.
- optionally ``Options``: a pydantic model of the backend's own config keys. Config
  validation checks a version's extra keys against it; without it, extra keys are refused.
- optionally ``import_libraries()``: imports its heavy libraries, called before a load's
  memory is measured, so the first model of a backend is not charged for torch itself.

Built-in backends are named in :data:`BUILTIN`; third-party ones register a module under
the entry-point group ``hotswapd.backends``. Modules are imported on first use, and a
backend imports its heavy libraries inside ``load``, so the CLI never imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from hotswapd.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from pydantic import BaseModel


ENTRY_POINT_GROUP = "hotswapd.backends"
BUILTIN: dict[str, str] = {
    "sentence-transformers": "hotswapd.backends.sentence_transformers",
    "openai": "hotswapd.backends.openai_remote",
    "onnx": "hotswapd.backends.onnx",
    "openvino": "hotswapd.backends.openvino",
    "auto": "hotswapd.tuning.auto_backend",
    "transformers": "hotswapd.backends.transformers",
    "sagemaker": "hotswapd.backends.sagemaker",
}


class Embedder(Protocol):
    """What a loaded model version offers the daemon.

    Optional extras, read once per loaded version into its :class:`Capabilities` (the only
    place that looks for them): ``max_tokens``, ``count_tokens(texts)``,
    ``token_windows(text, window, overlap)``, a settable ``batch_size``, ``memory_bytes``
    (what it holds, when an RSS delta would be wrong), ``precision`` and ``tuned_path`` /
    ``tuned`` (what ``auto`` chose), ``identity`` (a remote model's, re-read on each use),
    ``space() -> dict`` (what must match for two versions to be interchangeable: pooling,
    normalisation, vocabulary), ``describe() -> dict`` (facts for ``hs models``),
    ``tokenize(texts)`` with ``encode_tokens(tokens, normalize=)``, and for a version built
    from others, ``parts`` and ``merge(blocks, normalize)``.
    """

    dimension: int
    device: str

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        """Return a C-contiguous float32 array of shape (len(texts), dimension)."""
        ...

    def close(self) -> None:
        """Release what the model holds (GPU memory, sessions); called once, after the last use."""
        ...


class Composite(Protocol):
    """A version whose vectors combine other loaded versions' (an ensemble): the pipeline
    runs each part as a request of its own, then merges their rows."""

    @property
    def parts(self) -> Sequence[Any]:
        """Each with ``loaded`` (a loaded version) and ``spec`` (``model@version``)."""
        ...

    def merge(self, blocks: Sequence[np.ndarray], normalize: bool) -> np.ndarray: ...


@dataclass(frozen=True)
class Capabilities:
    """What an embedder offers beyond :class:`Embedder`, looked up once when its version
    loads: callers read fields, and a backend declares an extra by having it."""

    max_tokens: int | None = None
    model_max_tokens: int | None = None  # the model's own limit, before a version's max_seq_length
    count_tokens: Callable[[Sequence[str]], Sequence[int]] | None = None
    token_windows: Callable[[str, int, int], Sequence[tuple[str, int]]] | None = None
    settable_batch_size: bool = False
    memory_bytes: int | None = None
    precision: str | None = None
    tuned_path: str | None = None
    tuned: Any = None
    identity: Callable[[], Any] | None = None  # a remote model's identity may change while loaded
    space: Callable[[], dict[str, Any]] | None = None
    describe: Callable[[], dict[str, Any]] | None = None
    member_facts: Callable[[], list[dict[str, Any]]] | None = None
    composite: Composite | None = None
    # Give back what a burst grew that the C library cannot see (ONNX Runtime's arena); run
    # on the inference thread, never beside a batch, after the queue drains.
    release_memory: Callable[[], None] | None = None
    # Tokenise apart from the model run: ``tokenize(texts)`` gives one object per text whose
    # ``len`` is its token count, and ``encode_tokens(those, normalize=)`` runs the model on
    # them. The daemon tokenises a large request off the inference thread and splits it by
    # true token counts. A backend offers both or neither.
    tokenize: Callable[[Sequence[str]], Sequence[Any]] | None = None
    encode_tokens: Callable[..., np.ndarray] | None = None
    # Each text's tokens (id, text, special, span): TEI's /tokenize.
    token_details: Callable[[Sequence[str]], list[list[dict[str, Any]]]] | None = None

    @classmethod
    def of(cls, embedder: Any) -> Capabilities:
        def method(name: str) -> Any:
            found = getattr(embedder, name, None)
            return found if callable(found) else None

        return cls(
            max_tokens=getattr(embedder, "max_tokens", None) or None,
            model_max_tokens=getattr(embedder, "model_max_tokens", None) or None,
            count_tokens=method("count_tokens"),
            token_windows=method("token_windows"),
            token_details=method("token_details"),
            settable_batch_size=hasattr(embedder, "batch_size"),
            memory_bytes=getattr(embedder, "memory_bytes", None),
            precision=getattr(embedder, "precision", None),
            tuned_path=getattr(embedder, "tuned_path", None),
            tuned=getattr(embedder, "tuned", None),
            # Read on each use (a remote model can change under a loaded version); whether it
            # has one is asked of its class and instance, never by reading the property here.
            identity=(lambda: getattr(embedder, "identity", None)) if _declares(embedder, "identity") else None,
            space=method("space"),
            describe=method("describe"),
            member_facts=method("member_facts"),
            release_memory=method("release_memory"),
            tokenize=method("tokenize") if method("encode_tokens") is not None else None,
            encode_tokens=method("encode_tokens") if method("tokenize") is not None else None,
            composite=embedder if method("merge") is not None and hasattr(embedder, "parts") else None,
        )


def _declares(embedder: Any, name: str) -> bool:
    return hasattr(type(embedder), name) or name in getattr(embedder, "__dict__", {})


class VersionSpec(Protocol):
    """What a loader reads of a version's config (a :class:`hotswapd.config.schema.VersionConfig`;
    named by its shape here so that this seam does not import the config module, which
    imports it)."""

    backend: str
    source: str
    device: str
    normalize: bool
    batch_size: int
    max_seq_length: int | None
    trust_remote_code: bool
    fallback: str | None  # "cpu": run there when the named device is missing

    @property
    def options(self) -> BaseModel: ...

    def resolve(self, source: str) -> Path:
        """A path the version names (an ONNX file, a tokenizer), resolved like its source."""
        ...


class Loader(Protocol):
    def __call__(self, path: Path, version: VersionSpec) -> Embedder: ...


@cache
def _plugins() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {entry.name: entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted({**_plugins(), **BUILTIN})


def _module(name: str) -> ModuleType:
    target = BUILTIN.get(name) or _plugins().get(name)
    if target is None:
        raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(backend_names())}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} ({target}) cannot be imported: {exc}") from exc
    return getattr(module, attr) if attr else module


def get_loader(name: str) -> Loader:
    module = _module(name)
    if not callable(getattr(module, "load", None)):
        raise ConfigError(f"backend {name!r} has no load(path, version) function")
    return module.load


def import_libraries(name: str) -> None:
    """Let a backend import its libraries before a load is measured (optional hook)."""
    hook = getattr(_module(name), "import_libraries", None)
    if callable(hook):
        hook()


def options_schema(name: str) -> type[BaseModel] | None:
    """The pydantic model of a backend's own config keys, or None if it has none."""
    return getattr(_module(name), "Options", None)
