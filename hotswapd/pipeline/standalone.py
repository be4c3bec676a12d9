"""A version loaded and run outside the daemon, exactly as the daemon does it.

For workers that encode beside the daemon (a Ray actor on another machine): the version's
source is resolved and verified, its weights digested and its backend loaded by the same
functions the daemon's registry calls, so its fingerprint is the one the daemon reports
when the files are the same, and differs when they are not. Encoding follows the daemon's
path too: the version's own ``normalize`` default, its ``long_text`` policy, the same
check that refuses NaN, infinite or zero vectors.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hotswapd.backends import get_loader, import_libraries
from hotswapd.config.schema import Config, load_config
from hotswapd.pipeline.encoding import EncodeJob, encode_here
from hotswapd.text.prompts import text_prep
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.errors import RequestError, UnknownModel, UnknownVersion
from hotswapd.sources.fingerprint import fingerprint

if TYPE_CHECKING:
    import numpy as np


def load_version(config: Config | Path, spec: str, *, threads: int | None = None) -> LoadedVersion:
    """``NAME@VERSION`` of ``config`` (a parsed config or its file), loaded here.

    ``threads`` caps the backend's compute threads (a worker given one core must not start
    one thread per core of the machine); it changes no vector, so not the fingerprint."""
    if not isinstance(config, Config):
        config = load_config(config)
    name, _, version = spec.partition("@")
    model = config.models.get(name)
    if model is None:
        raise UnknownModel(f"unknown model {name!r} in the config (it has: {', '.join(config.models) or 'none'})")
    version = version or model.active
    version_config = model.versions.get(version)
    if version_config is None:
        raise UnknownVersion(f"unknown version {name}@{version}; configured: {', '.join(model.versions)}")
    if version_config.source is None:
        raise RequestError(f"{name}@{version} is an ensemble: its members are combined by the daemon, not loaded here")
    started = time.perf_counter()
    path = version_config.resolve(version_config.source)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when first imported
    import_libraries(version_config.backend)
    torch = sys.modules.get("torch")
    if threads and torch is not None:
        torch.set_num_threads(threads)
    running = version_config
    thread_option = {"onnx": "intra_op_threads", "openvino": "threads"}.get(version_config.backend)
    if threads and thread_option:
        running = type(version_config).model_validate({**version_config.model_dump(), thread_option: threads})
    prep = text_prep(version_config.prompts, version_config.default_prompt, version_config.preprocess, path)
    embedder = get_loader(version_config.backend)(path, running)
    # The version's own config, not the thread-capped copy: the fingerprint is the daemon's.
    return LoadedVersion(name, version, version_config, embedder, fingerprint(path), time.time(), time.perf_counter() - started, 0, text=prep)


def encode_texts(loaded: LoadedVersion, texts: list[str], normalize: bool | None = None, *, prompt: str | None = None) -> np.ndarray:
    """Rows of little-endian float32, as the daemon would answer for ``texts`` (with
    ``prompt``): the daemon's pipeline, run in this thread (hotswapd.pipeline.encoding)."""
    normalize = loaded.config.normalize if normalize is None else normalize
    return encode_here(EncodeJob(loaded, list(texts), normalize, prompt)).vectors
