"""Backend: a sentence-transformers model directory, run by torch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hotswapd.backends.support.devices import torch_device
from hotswapd.backends.support.model_files import vector_space
from hotswapd.backends.support.precision import ChosenPrecision, PrecisionOptions, running_in
from hotswapd.backends.support.tokenizing import CountsOnACopy
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from hotswapd.backends import VersionSpec
    from hotswapd.backends.cross_encoder import CrossEncoderScorer

log = logging.getLogger(__name__)


class Options(PrecisionOptions):
    """precision: bf16 (CPUs with AVX-512 BF16 or AMX, CUDA) or fp16 (CUDA) under
    torch.autocast; auto: bf16 where it runs fast and agrees with fp32, else fp32."""


class SentenceTransformerEmbedder(ChosenPrecision, CountsOnACopy):
    def __init__(self, model: SentenceTransformer, device: str, batch_size: int) -> None:
        # The space is described before the pipeline's own Normalize is taken out: it says
        # what the model ships as, which is what the switch guard compares.
        self._space = _describe_space(model)
        self._model = _without_normalize(model)
        self._tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.device = device
        dimension = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        self.dimension = int(dimension or model.get_sentence_embedding_dimension())

    @property
    def max_tokens(self) -> int | None:
        """Longer texts are truncated to this many tokens (shown by `hs models`)."""
        return getattr(self._model, "max_seq_length", None)

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        return self.encode_in(self.choice.precision, texts, normalize=normalize)

    def encode_in(self, precision: str, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        import numpy as np

        with running_in(precision, self.device):
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=normalize,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype=np.float32)  # bf16 rows have no numpy dtype

    def space(self) -> dict[str, object]:
        """Pooling, tokenizer vocabulary and built-in normalisation: for the switch guard."""
        return dict(self._space)

    def close(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            del self._model
            torch.cuda.empty_cache()


def _without_normalize(model: SentenceTransformer) -> SentenceTransformer:
    """The pipeline without its Normalize modules. normalize_embeddings=True does the same
    L2 step, so normalised output is unchanged; but with them in place `normalize=False`
    (``hs encode --no-normalize``, a version's ``normalize = false``) was silently ignored."""
    for index in reversed(range(len(model))):
        if type(model[index]).__name__ == "Normalize":
            del model[index]
    return model


def _describe_space(model: SentenceTransformer) -> dict[str, object]:
    pooling = None
    normalizes = False
    for module in model:
        kind = type(module).__name__
        if kind == "Pooling":
            pooling = _pooling_name(module)
        normalizes = normalizes or kind == "Normalize"
    return vector_space(pooling, normalizes, model.tokenizer.get_vocab())


def _pooling_name(module: object) -> str | None:
    # sentence-transformers 6 names the mode in `pooling_mode` (a string or a list);
    # earlier releases offered get_pooling_mode_str().
    mode = getattr(module, "pooling_mode", None)
    if isinstance(mode, str):
        return mode
    if isinstance(mode, (list, tuple)):
        return "+".join(mode)
    describe = getattr(module, "get_pooling_mode_str", None)
    return describe() if callable(describe) else None


def _quiet_transformers() -> None:
    """transformers draws a tqdm bar while loading weights; a daemon log is no terminal."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()


def load(path: Path, version: VersionSpec) -> SentenceTransformerEmbedder | CrossEncoderScorer:
    if getattr(version, "task", "embed") == "rerank":  # a cross-encoder: scores, not vectors
        from hotswapd.backends.cross_encoder import load as load_cross_encoder

        return load_cross_encoder(path, version)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelLoadError(
            "backend 'sentence-transformers' needs the sentence-transformers package: "
            "pip install 'hotswap[sentence-transformers]'"
        ) from exc
    device = torch_device(version.device, version.fallback)
    _quiet_transformers()
    try:
        model = SentenceTransformer(
            str(path),
            device=device,
            local_files_only=True,
            trust_remote_code=version.trust_remote_code,
            # safetensors only: a pickled .bin could run code when loaded.
            model_kwargs={"use_safetensors": True},
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"sentence-transformers could not load {path}: {exc}") from exc
    own_max_tokens = getattr(model, "max_seq_length", None)
    if version.max_seq_length is not None:
        model.max_seq_length = version.max_seq_length
    model.eval()
    # Prompts are the daemon's (hotswapd.text: the same for every backend, and in the cache
    # key); the model's own default prompt would be put before the daemon's a second time.
    model.default_prompt_name = None
    embedder = SentenceTransformerEmbedder(model, device, version.batch_size)
    embedder.model_max_tokens = own_max_tokens  # the model's own limit: max_seq_length written equal to it is no change
    embedder.choose_precision(version.options, str(path))  # type: ignore[arg-type]
    log.info("loaded sentence-transformers model from %s on %s (%s: %s)", path, device, embedder.choice.precision, embedder.choice.reason)
    return embedder


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
