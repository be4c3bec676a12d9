"""Tokenising with the ``tokenizers`` library, the way sentence-transformers feeds a model.

Texts are stripped, truncated to the model's max sequence length and padded per batch.
Batches are formed from length-sorted texts, so a five-word text is never padded to the
length of a 256-token passage; results come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.errors import ModelLoadError


@dataclass
class TokenBatch:
    positions: list[int]  # where each row goes in the caller's order
    input_ids: np.ndarray  # (batch, seq) int64
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


class Tokens:
    """One text as the model reads it, and nothing else: ids and token type ids (int32).
    A ``tokenizers.Encoding`` also holds each token's string, offsets, word ids and, when
    truncated, the windows it cut off; held for a whole queued request, those took ~60x
    the text's size (16 MB of text: 973 MB)."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: np.ndarray, type_ids: np.ndarray) -> None:
        self.ids = ids
        self.type_ids = type_ids

    @classmethod
    def of(cls, encoding: Any) -> Tokens:
        return cls(np.array(encoding.ids, dtype=np.int32), np.array(encoding.type_ids, dtype=np.int32))

    def __len__(self) -> int:
        return len(self.ids)


class TokenizedBackend:
    """What the daemon asks of a backend about tokens (usage counts, long texts), answered
    by its :class:`TextTokenizer` (``self._tokenizer``)."""

    _tokenizer: TextTokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._tokenizer.count_tokens(texts)

    def token_windows(self, text: str, window: int, overlap: int) -> list[tuple[str, int]]:
        return self._tokenizer.token_windows(text, window, overlap)

    def token_details(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Each text's tokens (id, text, special, span), for TEI's /tokenize."""
        return self._tokenizer.token_details(texts)

    @property
    def max_tokens(self) -> int:
        return self._tokenizer.max_seq_length


class TokenCounter:
    """Counts texts' tokens and cuts them into windows with a private, untruncated copy of a
    tokenizer, used by the tokens pool only.

    Never the inference thread's own tokenizer: a Hugging Face fast tokenizer sets
    truncation and padding on its shared Rust object at every call, so counting on one
    thread while another encoded made the encoder's batch ragged ("Unable to create
    tensor": a sentence-transformers version failed requests under the HTTP benchmark).
    """

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        rust = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
        self._slow: Any = None
        if rust is None:  # a slow (Python) tokenizer: a deep copy of it
            import copy

            self._slow = copy.deepcopy(tokenizer)
            return
        self._rust = Tokenizer.from_str(rust.to_str())
        self._rust.no_truncation()
        self._rust.no_padding()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        stripped = [text.strip() for text in texts]
        if self._slow is not None:
            return [len(ids) for ids in self._slow(stripped, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
        return [len(encoding.ids) for encoding in self._rust.encode_batch(stripped)]

    def token_details(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Each text's tokens as Text Embeddings Inference's /tokenize lists them: id, text,
        whether it is special, and its character span (None for a special token)."""
        stripped = [text.strip() for text in texts]
        if self._slow is not None:
            out = []
            for text in stripped:
                ids = self._slow(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
                special = set(self._slow.all_special_ids)
                out.append([{"id": i, "text": self._slow.convert_ids_to_tokens(i), "special": i in special, "start": None, "stop": None} for i in ids])
            return out
        return [
            [
                {"id": token_id, "text": token, "special": bool(mask), "start": None if mask else start, "stop": None if mask else stop}
                for token_id, token, mask, (start, stop) in zip(encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True)
            ]
            for encoding in self._rust.encode_batch(stripped)
        ]

    def count_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Tokens per (query, document) pair as a cross-encoder reads it, special tokens
        included, before truncation."""
        if self._slow is not None:
            queries, documents = [q.strip() for q, _ in pairs], [d.strip() for _, d in pairs]
            return [len(ids) for ids in self._slow(queries, documents, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
        return [len(encoding.ids) for encoding in self._rust.encode_batch([(q.strip(), d.strip()) for q, d in pairs])]

    def token_windows(self, text: str, window: int, overlap: int) -> list[tuple[str, int]]:
        """Overlapping windows of ``text`` of at most ``window`` tokens (long_text = "chunk-mean")."""
        stripped = text.strip()
        if self._slow is not None:
            offsets = self._slow(stripped, add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        else:
            offsets = self._rust.encode(stripped, add_special_tokens=False).offsets
        return windows_from_offsets(stripped, offsets, window, overlap)


class CountsOnACopy:
    """Token questions for a backend whose ``_tokenizer`` is a Hugging Face tokenizer the
    inference thread uses: answered by a private :class:`TokenCounter` copy of it."""

    _tokenizer: Any

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation (OpenAI's usage)."""
        return self._counter.count_tokens(texts)

    def token_windows(self, text: str, window: int, overlap: int) -> list[tuple[str, int]]:
        """Overlapping windows of ``text`` of at most ``window`` tokens (long_text = "chunk-mean")."""
        return self._counter.token_windows(text, window, overlap)

    def token_details(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Each text's tokens (id, text, special, span), for TEI's /tokenize."""
        return self._counter.token_details(texts)

    @cached_property
    def _counter(self) -> TokenCounter:
        return TokenCounter(self._tokenizer)


class PairTokens:
    """Token questions of a rerank backend (``_tokenizer``: a Hugging Face or ``tokenizers``
    tokenizer), whose pipeline texts are (query, document) pairs: answered by a private
    :class:`TokenCounter` copy."""

    _tokenizer: Any

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        from hotswapd.text.pairs import split_pair

        return self._counter.count_pairs([split_pair(text) for text in texts])

    def token_details(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        from hotswapd.text.pairs import split_pair

        return self._counter.token_details([split_pair(text)[0] for text in texts])

    @cached_property
    def _counter(self) -> TokenCounter:
        return TokenCounter(self._tokenizer)

    def describe(self) -> dict[str, object]:
        return {"task": "rerank", "activation": "sigmoid"}


class TextTokenizer:
    def __init__(self, tokenizer_file: Path, max_seq_length: int) -> None:
        from tokenizers import Tokenizer

        if not tokenizer_file.is_file():
            raise ModelLoadError(f"{tokenizer_file} not found: this backend needs a fast tokenizer file (tokenizer.json)")
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ModelLoadError(f"{tokenizer_file}: not a valid tokenizer: {exc}") from exc
        self.max_seq_length = max_seq_length
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        self._tokenizer.no_padding()
        self._pad_id = self._pad_token_id()
        self._counting: Any = None  # the untruncated copy, made on first use

    def _pad_token_id(self) -> int:
        for token in ("[PAD]", "<pad>", "<|endoftext|>"):
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation (OpenAI's usage)."""
        return self._counter().count_tokens(texts)

    def token_windows(self, text: str, window: int, overlap: int) -> list[tuple[str, int]]:
        return self._counter().token_windows(text, window, overlap)

    def token_details(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        return self._counter().token_details(texts)

    def _counter(self) -> TokenCounter:
        if self._counting is None:  # made once, on the tokens pool
            self._counting = TokenCounter(self._tokenizer)
        return self._counting  # type: ignore[no-any-return]

    def vocabulary(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded ids per text (for a remote endpoint that takes ragged lists)."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch([text.strip() for text in texts])]

    def encodings(self, texts: Sequence[str]) -> list[Any]:
        """Each text as the model reads it (stripped, truncated, special tokens added), unpadded:
        ``tokenizers.Encoding`` objects, whose ``len`` is the text's token count."""
        return self._tokenizer.encode_batch([text.strip() for text in texts])  # type: ignore[no-any-return]

    def tokens(self, texts: Sequence[str]) -> list[Tokens]:
        """The same, kept compact: for tokens held while a request waits for the model."""
        return [Tokens.of(encoding) for encoding in self.encodings(texts)]

    def batches(self, texts: Sequence[str], batch_size: int) -> Iterator[TokenBatch]:
        return self.batches_of(self.encodings(texts), batch_size)

    def batches_of(self, encodings: Sequence[Any], batch_size: int) -> Iterator[TokenBatch]:
        """Padded batches of texts of like length, longest first (from Encodings or Tokens)."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]), reverse=True)
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            width = max(len(encodings[i]) for i in positions)
            ids = np.full((len(positions), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(positions), width), dtype=np.int64)
            types = np.zeros((len(positions), width), dtype=np.int64)
            for row, index in enumerate(positions):
                encoding = encodings[index]
                length = len(encoding)
                ids[row, :length] = encoding.ids
                mask[row, :length] = 1
                types[row, :length] = encoding.type_ids
            yield TokenBatch(positions, ids, mask, types)


def encode_in_batches(batches: Iterator[TokenBatch], run: Callable[[TokenBatch], np.ndarray], count: int) -> np.ndarray:
    """Run ``run`` (a batch -> (rows, dim) vectors) over the ``batches`` of ``count`` texts; caller's order out."""
    out: np.ndarray | None = None
    for batch in batches:
        vectors = run(batch)
        if out is None:
            out = np.empty((count, vectors.shape[1]), dtype=np.float32)
        out[batch.positions] = vectors
    assert out is not None, "encode_in_batches needs at least one text"
    return out


def windows_from_offsets(text: str, offsets: Sequence[tuple[int, int]], window: int, overlap: int) -> list[tuple[str, int]]:
    """Overlapping windows of at most ``window`` tokens, as exact substrings of ``text`` (from
    the tokenizer's character offsets, so nothing is lost to decoding), with their token counts."""
    spans = [span for span in offsets if span[1] > span[0]]
    if not spans:
        return [(text, 0)]
    pieces = []
    start = 0
    while True:
        end = min(start + window, len(spans))
        pieces.append((text[spans[start][0] : spans[end - 1][1]], end - start))
        if end == len(spans):
            return pieces
        start = max(end - overlap, start + 1)
