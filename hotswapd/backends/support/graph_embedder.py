"""What the ONNX and OpenVINO backends share: a compiled graph fed tokenised batches.

Both run a transformer exported to a graph that returns ``last_hidden_state``, tokenise with
the ``tokenizers`` library the way sentence-transformers does, and pool and normalise in
numpy (:mod:`hotswapd.backends.support.pooling`), so their vectors match sentence-transformers'.
A subclass supplies ``_infer(feeds) -> last_hidden_state`` and what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hotswapd.backends.support.model_files import vector_space
from hotswapd.backends.support.pooling import l2_normalize, pool
from hotswapd.backends.support.tokenizing import TextTokenizer, TokenBatch, TokenizedBackend, encode_in_batches


class GraphEmbedder(TokenizedBackend):
    def __init__(self, tokenizer: TextTokenizer, input_names: set[str], pooling: str, normalizes: bool, device: str, batch_size: int) -> None:
        self._tokenizer = tokenizer
        self._inputs = input_names
        self._pooling = pooling
        self._normalizes = normalizes
        self.batch_size = batch_size
        self.device = device
        self.details: dict[str, Any] = {}
        self.dimension = int(self.encode(["dimension probe"], normalize=False).shape[1])

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _run(self, batch: TokenBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "token_type_ids": batch.token_type_ids}
        tokens = self._infer({name: value for name, value in feeds.items() if name in self._inputs})
        return pool(tokens, batch.attention_mask, self._pooling)

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        return self.encode_tokens(self._tokenizer.encodings(texts), normalize=normalize)

    def tokenize(self, texts: Sequence[str]) -> list[Any]:
        """The texts as :meth:`encode_tokens` takes them (compact: they wait in the queue).
        The daemon calls this off the inference thread, so that it splits a request by true
        token counts (pieces padded to 96 % useful tokens, against 90 % by an estimate) and
        the model thread does not tokenise again."""
        return self._tokenizer.tokens(texts)

    def encode_tokens(self, tokens: Sequence[Any], *, normalize: bool) -> np.ndarray:
        vectors = encode_in_batches(self._tokenizer.batches_of(tokens, self.batch_size), self._run, len(tokens))
        return l2_normalize(vectors) if normalize else vectors

    def space(self) -> dict[str, object]:
        space = vector_space(self._pooling, self._normalizes, self._tokenizer.vocabulary())
        if "check" not in self.details:
            # A graph nobody compared with the model it came from is not taken to share its
            # space; the switch guard then asks for a `compatible_with` claim, which it tests.
            space["conversion"] = "not checked against the original model"
        return space

    def describe(self) -> dict[str, Any]:
        return dict(self.details)
