"""The rerank op: a query and its documents scored by a rerank version (a cross-encoder).

It is the encode op on pairs: each document becomes the text ``query SEP document``
(hotswapd.text.pairs), so the pairs are batched, admitted, cached, truncated or refused
by tokens, and counted in the version's health exactly as texts are, by the version
picked once at dispatch (during a canary each request is scored wholly by one side). The
one-column answer becomes the documents' scores, best first.
"""

from __future__ import annotations

import math
from typing import Any

from hotswapd.core.encode_op import EncodeFlags, EncodeOp
from hotswapd.core.op_types import Deferred, Outcome, option
from hotswapd.core.seams import OpSpec
from hotswapd.errors import EmptyRequest, InvalidText, ProtocolError
from hotswapd.pipeline.encoding import Encoding
from hotswapd.text.pairs import MAX_RERANK_DOCUMENTS, PAIR_SEPARATOR
from hotswapd.wire.protocol import Request

MAX_DOCUMENTS = MAX_RERANK_DOCUMENTS
SEP = PAIR_SEPARATOR.encode()


class RerankOp(EncodeOp):
    task = "rerank"

    def prepare(self, request: Request) -> Deferred:
        """Payload: the query, then each document (UTF-8 frames)."""
        if len(request.payload) < 2:
            raise EmptyRequest("rerank needs a query and at least one document")
        query, documents = bytes(request.payload[0]), [bytes(frame) for frame in request.payload[1:]]
        if len(documents) > MAX_DOCUMENTS:
            raise ProtocolError(f"{len(documents)} documents in one rerank; the limit is {MAX_DOCUMENTS}")
        if not query.strip():
            raise InvalidText("the query is empty", None)
        for index, text in enumerate([query, *documents]):
            if SEP in text:
                what = "the query" if index == 0 else f"document {index}"
                raise InvalidText(f"{what} contains a NUL character", None if index == 0 else index - 1)
        empty = next((i for i, document in enumerate(documents) if not document), None)
        if empty is not None:
            raise InvalidText(f"document {empty + 1} is empty", empty)
        pairs = Request(request.id, request.op, request.model, request.options, [query + SEP + document for document in documents], request.peer)
        return super().prepare(pairs)

    def flags(self, normalize: bool, use_cache: bool, count_tokens: bool) -> EncodeFlags:
        return EncodeFlags(normalize=False, use_cache=use_cache, count_tokens=count_tokens)  # a score is no vector

    def context(self, request: Request) -> tuple[int | None, bool]:
        top = option(request, "top_n", int)
        if top is not None and top < 1:
            raise ProtocolError("option 'top_n' must be at least 1")
        return top, bool(option(request, "raw_scores", bool, False))

    def outcome(self, encoding: Encoding, flags: EncodeFlags, context: Any) -> Outcome:
        top, raw = context
        logits = [float(value) for value in encoding.vectors[:, 0]]
        scores = logits if raw else [_sigmoid(value) for value in logits]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top]
        facts = encoding.facts()
        result = {
            "model": facts["model"],
            "version": facts["version"],
            "fingerprint": facts["fingerprint"],
            "count": facts["count"],
            "cached": facts["cached"],
            "truncated": facts["truncated"],
            "raw_scores": raw,
            "results": [{"index": i, "score": scores[i]} for i in order],
        }
        if flags.count_tokens:
            result["tokens"] = encoding.tokens
        return Outcome(result, [])


def _sigmoid(value: float) -> float:
    """CrossEncoder.predict's activation for one label."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


RERANK_OP = OpSpec(
    "rerank",
    frozenset({"key", "deadline_ms", "no_cache", "top_n", "raw_scores", "count_tokens", "prompt", "traceparent"}),
    lambda services: RerankOp(services).prepare,
)
