"""A loaded model version: what the registry hands out, with its leases and its config.

The registry decides when a version is loaded, leased, retired and closed; this module
holds the record itself and how a config edit of serving-only fields is applied to it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hotswapd.backends import Capabilities, Embedder
from hotswapd.config.schema import LIVE_FIELDS, VersionConfig
from hotswapd.text.prompts import TextPrep

# Config fields that do not take part in computing a vector: where the files come from (the
# weights digest covers their content) and the device as written ("auto"; the device a
# version really runs on is part of its identity instead).
NOT_COMPUTATION = frozenset({"embeddings_path", "accept_foreign_corpus", "bridge_path", "bridge_min_recall", "source", "device", "fallback"})


@dataclass
class LoadedVersion:
    model: str
    version: str
    config: VersionConfig
    embedder: Embedder
    weights: str  # digest of the source's files (hotswapd.sources.fingerprint): the same model copied anywhere agrees
    loaded_at: float
    load_seconds: float
    memory_bytes: int
    last_used: float = field(default_factory=time.time)
    warmed: bool = False
    # Its first call, which pays for set-up (allocations, graph optimisation), is behind it:
    # its batches' times are what its work costs (admission's cost model reads them).
    timed: bool = False
    # Guarded by the registry's lock: requests holding it, and whether it takes new ones.
    leases: int = 0
    leases_taken: int = 0  # ever: tells a periodic benchmark whether anyone else used a version it loaded
    retired: bool = False
    closed: bool = False
    # What features attached when it loaded (hotswapd.core.seams.VersionHook), by hook name:
    # its corpus, for one. Each has close(), called with the version's.
    attachments: dict[str, Any] = field(default_factory=dict)
    # The loaded versions it leases for as long as it is loaded (an ensemble's members):
    # retiring one of them retires this one too.
    members: tuple[LoadedVersion, ...] = ()
    # What its embedder offers beyond encode (hotswapd.backends), looked up once, at the load.
    caps: Capabilities = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.caps is None:
            self.caps = Capabilities.of(self.embedder)
    # Its prompts and preprocessors (the config's, else the model directory's prompts).
    text: TextPrep = field(default_factory=TextPrep)

    def close(self) -> None:
        """Release the model and what was attached to it: once, after the last request that leased it."""
        try:
            self.embedder.close()
        finally:
            for attachment in list(self.attachments.values()):
                attachment.close()

    @cached_property
    def _local_identity(self) -> bytes:
        options = self._computation()
        # A backend that chose its precision itself (precision = "auto") says which: the
        # same config computes bf16 vectors on one machine and fp32 on another.
        chosen = self.caps.precision
        suffix = f"|{chosen}" if chosen else ""
        # A version with backend = "auto" says which path it chose, for the same reason.
        path = self.caps.tuned_path
        suffix += f"|{path}" if path else ""
        return hashlib.sha256(f"{self.weights}|{options}|{self.embedder.device}{suffix}".encode()).digest()[:16]

    def _computation(self) -> str:
        """The config's computing fields, in a normal form: ``max_seq_length`` written equal
        to the model's own limit is the model's own (changes no vector, so no fingerprint).
        Otherwise the same text as ever, so that no existing fingerprint changes (the cache,
        bridges and resumable jobs are keyed by them)."""
        config = self.config
        if config.max_seq_length is not None and config.max_seq_length == self.caps.model_max_tokens:
            config = config.model_copy(update={"max_seq_length": None})
        return config.model_dump_json(exclude=set(LIVE_FIELDS) | NOT_COMPUTATION)

    @property
    def vector_identity(self) -> bytes:
        """What besides the text decides this version's vectors: the weights, and what computes
        with them (backend, precision, export and pooling options, the device it runs on).
        Where the files came from, and serving-only fields, change nothing. A remote backend
        adds what it knows of the model behind the endpoint (``identity``), which may change
        while the version is loaded: a silent remote upgrade changes the fingerprint."""
        remote = self.caps.identity() if self.caps.identity is not None else None
        if not remote:
            return self._local_identity
        return hashlib.sha256(self._local_identity + str(remote).encode()).digest()[:16]

    @property
    def fingerprint(self) -> str:
        """The vector identity as reported (replies, ``hs models``, history): the torch and the
        ONNX int8 versions of one model differ here, though their weights digest is the same."""
        return self.vector_identity.hex()[:16]


def changed_fields(old: VersionConfig, new: VersionConfig) -> set[str]:
    before, after = old.model_dump(), new.model_dump()
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def apply_live(loaded: LoadedVersion, config: VersionConfig) -> None:
    """Give a loaded version its new serving-only fields without touching its weights."""
    if config.batch_size != loaded.config.batch_size and loaded.caps.settable_batch_size:
        loaded.embedder.batch_size = config.batch_size  # backends read it per call
    loaded.config = config


@dataclass
class Slot:
    """The registry's per-version load state: the lock that serialises its loads, and how
    the last one went. What is loaded is in the published snapshot, not here."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last_error: str | None = None
    failures: int = 0  # failed loads; callers that waited on one share its failure


def split_spec(spec: str | None) -> tuple[str | None, str | None]:
    """``"name@version"`` -> (name, version); ``"name"`` -> (name, None)."""
    if spec is None:
        return None, None
    name, sep, version = spec.partition("@")
    return (name or None), (version if sep else None)
