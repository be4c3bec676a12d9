"""What the ONNX and OpenVINO rerank backends share: a cross-encoder graph fed tokenised pairs.

Each pipeline "text" is a (query, document) pair joined by
:data:`hotswapd.text.pairs.PAIR_SEPARATOR`; each "vector" handed back is its raw relevance
logit (one column). Pairs are tokenised together with the ``tokenizers`` library and cut
longest-first to the model's maximum, as transformers does for ``CrossEncoder``. A subclass
supplies ``_infer(feeds) -> logits`` and what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.backends.support.model_files import read_json, vector_space
from hotswapd.backends.support.tokenizing import PairTokens
from hotswapd.errors import ModelLoadError
from hotswapd.text.pairs import split_pair

# Two special tokens and a separator, and at least a token of each side.
MIN_PAIR_TOKENS = 8


class GraphCrossEncoder(PairTokens):
    dimension = 1

    def __init__(self, input_names: set[str], tokenizer_file: Path, max_length: int, device: str, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self._inputs = input_names
        usable_tokenizer(tokenizer_file)
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on a missing or malformed file
            raise ModelLoadError(f"{tokenizer_file}: not a usable tokenizer: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        pad = next((i for token in ("[PAD]", "<pad>") if (i := self._tokenizer.token_to_id(token)) is not None), 0)
        self._tokenizer.enable_padding(pad_id=pad)
        self.max_tokens = max_length
        self.device = device
        self.batch_size = batch_size
        self.details: dict[str, Any] = {}
        self._space = {"task": "rerank", **vector_space(None, False, self._tokenizer.get_vocab(with_added_tokens=True))}

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        """Raw logits, one row per pair (``normalize`` has no meaning for a score)."""
        rows = []
        pairs = [tuple(part.strip() for part in split_pair(text)) for text in texts]
        for start in range(0, len(pairs), self.batch_size):
            encodings = self._tokenizer.encode_batch(pairs[start : start + self.batch_size])
            feeds = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            }
            logits = self._infer({name: value for name, value in feeds.items() if name in self._inputs})
            rows.append(np.asarray(logits, dtype=np.float32).reshape(-1, 1))
        return np.ascontiguousarray(np.vstack(rows)) if rows else np.zeros((0, 1), dtype=np.float32)

    def space(self) -> dict[str, object]:
        return dict(self._space)


def usable_tokenizer(file: Path) -> None:
    """Refuse a tokenizer that is missing or not a regular file (a FIFO would hang its reader)."""
    if not file.is_file():
        raise ModelLoadError(f"{file} is missing or not a regular file: a rerank version on onnx or openvino needs the fast tokenizer (tokenizer.json)")


def pair_length(source: Path, asked: int | None) -> int:
    """The tokens a pair is cut to: the version's max_seq_length within the model's own
    limit (a longer one would fail every long pair in the graph), else the model's."""
    own = max_length(source)
    if asked is None:
        return own
    if not MIN_PAIR_TOKENS <= asked <= own:
        raise ModelLoadError(f"max_seq_length {asked}: a pair of this cross-encoder takes {MIN_PAIR_TOKENS} to {own} tokens")
    return asked


def max_length(source: Path) -> int:
    """The model's own limit: its tokenizer's, else its position embeddings', at most 512."""
    for name, key in (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings")):
        found = read_json(source / name)  # a broken file is the load's typed error; a missing one, the next guess
        value = found.get(key) if isinstance(found, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000:
            return min(value, 512)
    return 512


def refuse_disordered(check: dict[str, Any], min_spearman: float, what: str) -> None:
    """Refuse a conversion whose document order per query agrees less than ``min_spearman``
    with the torch model's on the check (NaN refuses too)."""
    if not check["spearman_min"] >= min_spearman:
        raise ModelLoadError(
            f"{what} orders documents unlike the torch model: Spearman {check['spearman_min']:.4f} "
            f"(mean {check['spearman_mean']:.4f}) on the {check['queries']}-query check, below min_spearman {min_spearman}: refused"
        )
