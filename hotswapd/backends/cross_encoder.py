"""Rerank versions on torch: sentence-transformers' CrossEncoder (``task = "rerank"`` with
backend ``sentence-transformers``).

Each "text" the pipeline hands over is a (query, document) pair joined by
:data:`hotswapd.text.pairs.PAIR_SEPARATOR`; each "vector" handed back is the pair's raw
relevance logit (one column). The rerank op applies the model's activation (a sigmoid for
one label, as ``CrossEncoder.predict`` does) unless raw scores are asked for, so the cache
keeps one figure per pair whatever the request wanted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.backends.support.devices import torch_device
from hotswapd.backends.support.model_files import vector_space
from hotswapd.backends.support.tokenizing import PairTokens
from hotswapd.errors import ModelLoadError
from hotswapd.text.pairs import split_pair

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)


class CrossEncoderScorer(PairTokens):
    dimension = 1  # one relevance logit per pair

    def __init__(self, model: Any, device: str, batch_size: int) -> None:
        self._model = model
        self._tokenizer = model.tokenizer
        self.device = device
        self.batch_size = batch_size
        labels = int(getattr(getattr(model, "config", None), "num_labels", 1) or 1)
        if labels != 1:
            raise ModelLoadError(f"a rerank version needs a cross-encoder with one relevance label; this one has {labels}")
        self._space = {"task": "rerank", **vector_space(None, False, self._tokenizer.get_vocab())}

    @property
    def max_tokens(self) -> int | None:
        """A pair longer than this is cut (long_text = "truncate") or refused ("error")."""
        return getattr(self._model, "max_seq_length", None) or getattr(self._model, "max_length", None)

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        """Raw logits, one row per pair; ``normalize`` has no meaning for a score."""
        import numpy as np
        import torch

        pairs = [split_pair(text) for text in texts]
        scores = self._model.predict(pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(), convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(np.asarray(scores, dtype=np.float32).reshape(len(texts), 1))

    def space(self) -> dict[str, object]:
        """What the switch guard compares: the task first (a reranker is no embedder)."""
        return dict(self._space)

    def close(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            del self._model
            torch.cuda.empty_cache()


def load(path: Path, version: VersionSpec) -> CrossEncoderScorer:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        raise ModelLoadError("a rerank version needs the sentence-transformers package: pip install 'hotswap[sentence-transformers]'") from exc
    device = torch_device(version.device, version.fallback)
    kwargs: dict[str, Any] = {"max_length": version.max_seq_length} if version.max_seq_length else {}
    try:
        model = CrossEncoder(
            str(path), device=device, local_files_only=True, trust_remote_code=version.trust_remote_code,
            model_kwargs={"use_safetensors": True}, **kwargs,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"sentence-transformers could not load the cross-encoder {path}: {exc}") from exc
    scorer = CrossEncoderScorer(model, device, version.batch_size)
    log.info("loaded cross-encoder from %s on %s", path, device)
    return scorer
