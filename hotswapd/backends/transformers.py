"""Backend ``transformers``: a plain ``AutoModel`` + tokenizer with configurable pooling.

For models that are not sentence-transformers packages. Pooling is ``mean``, ``cls``,
``max`` or ``last-token`` (default: the directory's own sentence-transformers pooling
config if it has one, else mean), applied with the attention mask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.backends.support.devices import torch_device
from hotswapd.backends.support.model_files import read_layout, vector_space
from hotswapd.backends.support.pooling import PoolingName, choose_mode, l2_normalize, pool
from hotswapd.backends.support.precision import ChosenPrecision, PrecisionOptions, running_in
from hotswapd.backends.support.tokenizing import CountsOnACopy
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)


class Options(PrecisionOptions):
    pooling: PoolingName | None = None


class TransformersEmbedder(ChosenPrecision, CountsOnACopy):
    def __init__(self, model: Any, tokenizer: Any, pooling: str, normalizes: bool, max_length: int, device: str, batch_size: int) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._normalizes = normalizes
        self._max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.dimension = int(model.config.hidden_size) * len(pooling.split("+"))

    @property
    def max_tokens(self) -> int:
        return self._max_length

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        return self.encode_in(self.choice.precision, texts, normalize=normalize)

    def encode_in(self, precision: str, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        import numpy as np
        import torch

        stripped = [text.strip() for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(stripped[i]), reverse=True)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            batch = self._tokenizer(
                [stripped[i] for i in positions], padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode(), running_in(precision, self.device):
                tokens = self._model(**batch).last_hidden_state
            out[positions] = pool(tokens.float().cpu().numpy(), batch["attention_mask"].cpu().numpy(), self._pooling)
        return l2_normalize(out) if normalize else out

    def space(self) -> dict[str, object]:
        return vector_space(self._pooling, self._normalizes, self._tokenizer.get_vocab())

    def close(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            del self._model
            torch.cuda.empty_cache()


def load(path: Path, version: VersionSpec) -> TransformersEmbedder:
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ModelLoadError("backend 'transformers' needs transformers and torch: pip install 'hotswap[sentence-transformers]'") from exc
    options: Options = version.options  # type: ignore[assignment]
    layout = read_layout(path)
    device = torch_device(version.device, version.fallback)
    common = {"local_files_only": True, "trust_remote_code": version.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(layout.transformer_dir), **common)
        # safetensors only: a pickled .bin could run code when loaded.
        model = AutoModel.from_pretrained(str(layout.transformer_dir), use_safetensors=True, **common).to(device)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"transformers could not load {layout.transformer_dir}: {exc}") from exc
    model.eval()
    pooling = choose_mode(options.pooling, layout.pooling)
    max_length = version.max_seq_length or layout.max_seq_length
    log.info("transformers: loaded %s (%s pooling, max %d tokens) on %s", path, pooling, max_length, device)
    embedder = TransformersEmbedder(model, tokenizer, pooling, layout.normalizes, max_length, device, version.batch_size)
    embedder.model_max_tokens = layout.max_seq_length  # the model's own limit (the fingerprint's normal form)
    embedder.choose_precision(options, str(path))
    return embedder


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
