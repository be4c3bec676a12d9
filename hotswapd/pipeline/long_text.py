"""Texts longer than a version takes: never cut silently.

A version's ``long_text`` says what happens to a text over its maximum tokens:
``truncate`` (the default, as sentence-transformers does; the reply counts them),
``error`` (the request is refused, naming the text), or ``chunk-mean`` (the text is cut
into overlapping token windows, each embedded, and the vectors averaged weighted by their
tokens: close to what mean pooling over the whole text would give).

Only texts that could be too long are tokenised: a token covers at least one UTF-8 byte
(WordPiece, byte-level BPE, SentencePiece alike), so a text of fewer bytes than the
maximum, less a margin for special tokens, cannot be. Most requests skip all of this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hotswapd.text.decode import utf8_size
from hotswapd.errors import HotswapError, TextTooLong

if TYPE_CHECKING:
    from hotswapd.backends import Capabilities

SPECIAL_TOKENS_MARGIN = 8  # [CLS]/[SEP], <s>/</s>, a SentencePiece dummy prefix
OVERLAP = 8  # windows overlap by 1/OVERLAP of their length
COUNT_SLICE = 256  # texts counted at a time between looks at whether the request still stands


@dataclass
class Plan:
    """What is sent to the model for a request, and how to put its answer back together."""

    texts: list[str]  # to encode: the request's texts, with chunked ones replaced by their windows
    groups: list[list[tuple[int, int]]] = field(default_factory=list)  # per original text: (row, tokens)
    tokens: int | None = None  # the tokens the model reads (when counted): a truncated text counts to the cut
    tokens_cut: int = 0  # the tokens truncation dropped (when counted)
    truncated: int = 0
    chunked: int = 0

    @property
    def reshaped(self) -> bool:
        return any(len(group) != 1 for group in self.groups)


def might_be_long(texts: Sequence[str], max_tokens: int | None) -> list[int]:
    if not max_tokens:
        return []
    return [index for index, text in enumerate(texts) if utf8_size(text) + SPECIAL_TOKENS_MARGIN > max_tokens]


def plan(caps: Capabilities, texts: Sequence[str], suspects: list[int], policy: str, count_all: bool,
         stopped: Callable[[], HotswapError | None] | None = None) -> Plan:
    """Count what must be counted and apply ``policy`` (on the tokens pool, off the socket
    thread). Counted in slices of COUNT_SLICE texts, asking ``stopped`` between them: a
    withdrawn 15 MB request stops within a slice, not after seconds of tokenizing."""
    max_tokens = caps.max_tokens
    counter = caps.count_tokens
    result = Plan(list(texts), [[(i, 0)] for i in range(len(texts))])
    if counter is None:
        return result  # a plugin that cannot count: nothing known, nothing claimed
    which = list(range(len(texts))) if count_all else suspects
    counted: list[int] = []
    for start in range(0, len(which), COUNT_SLICE):
        why = stopped() if stopped is not None and start else None
        if why is not None:
            raise why
        counted += counter([texts[i] for i in which[start:start + COUNT_SLICE]])
    counts = dict(zip(which, counted, strict=True))
    if count_all:
        result.tokens = int(sum(counts.values()))
    over = [i for i in suspects if max_tokens and counts[i] > max_tokens]
    if not over:
        return result
    if policy == "error":
        first = over[0]
        raise TextTooLong(f"text {first} is {counts[first]} tokens; this version takes {max_tokens} (long_text = \"error\")", first)
    if policy == "truncate" or caps.token_windows is None:
        result.truncated = len(over)
        if result.tokens is not None:  # usage counts what the model read; what was cut is said apart
            result.tokens_cut = int(sum(counts[i] - max_tokens for i in over))
            result.tokens -= result.tokens_cut
        return result
    return _chunked(caps.token_windows, texts, set(over), int(max_tokens), result)


def _chunked(token_windows: Callable[[str, int, int], Sequence[tuple[str, int]]], texts: Sequence[str], over: set[int], max_tokens: int, base: Plan) -> Plan:
    window = max(1, max_tokens - SPECIAL_TOKENS_MARGIN)
    out = Plan([], [], tokens=base.tokens, chunked=len(over))
    for index, text in enumerate(texts):
        if index not in over:
            out.groups.append([(len(out.texts), 0)])
            out.texts.append(text)
            continue
        group = []
        for piece, tokens in token_windows(text, window, max(1, window // OVERLAP)):
            group.append((len(out.texts), tokens))
            out.texts.append(piece)
        out.groups.append(group)
    return out


def combine(vectors: np.ndarray, plan_: Plan, normalize: bool) -> np.ndarray:
    """One row per original text: a chunked text's windows averaged, weighted by their
    tokens; rows normalised afterwards when asked (``vectors`` came unnormalised)."""
    rows = np.empty((len(plan_.groups), vectors.shape[1]), dtype=np.float32)
    for index, group in enumerate(plan_.groups):
        if len(group) == 1:
            rows[index] = vectors[group[0][0]]
            continue
        weights = np.array([max(tokens, 1) for _, tokens in group], dtype=np.float64)
        rows[index] = (vectors[[row for row, _ in group]].astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
    if normalize:
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows
