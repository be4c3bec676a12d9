"""The search op: queries encoded and scored against a corpus by the SAME version.

It is the encode op with one more step: the version is picked once, at dispatch (so
during a canary or a split each query meets the corpus of the version that encoded it,
never the other's), the query vectors come back from the batcher, and the corpus is
searched on the ``search`` pool while the request still holds its lease on the version
(the corpus is closed only after its last search).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from hotswapd.corpus.attach import take
from hotswapd.corpus.files import CorpusError
from hotswapd.corpus.store import MAX_K
from hotswapd.core.encode_op import EncodeFlags, EncodeOp
from hotswapd.pipeline.encoding import Encoding
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.core.op_types import Deferred, Outcome, Reply, option
from hotswapd.core.seams import OpSpec
from hotswapd.errors import CorpusUnavailable, HotswapError, InternalError, InvalidText, ProtocolError
from hotswapd.wire.protocol import Request

MAX_QUERIES = 64
DEFAULT_K = 10
PRECISIONS = ("float", "binary", "int8")  # which copy of a corpus's matrix is scanned


class SearchOp(EncodeOp):
    def prepare(self, request: Request) -> Deferred:
        if len(request.payload) > MAX_QUERIES:
            raise ProtocolError(f"{len(request.payload)} queries in one search; the limit is {MAX_QUERIES}")
        blank = next((i for i, frame in enumerate(request.payload) if not bytes(frame).strip()), None)
        if blank is not None:
            raise InvalidText(f"query {blank} is empty", blank)
        return super().prepare(request)

    def flags(self, normalize: bool, use_cache: bool, count_tokens: bool) -> EncodeFlags:
        # Cosine against a normalised corpus: the query is normalised whatever was asked.
        return EncodeFlags(normalize=True, use_cache=use_cache, count_tokens=False)

    def context(self, request: Request) -> tuple[int, bool, str | None]:
        k = option(request, "k", int, DEFAULT_K)
        if not 0 < k <= MAX_K:
            raise ProtocolError(f"option 'k' must be in 1..{MAX_K}")
        precision = option(request, "precision", str)
        if precision not in (None, *PRECISIONS):
            raise ProtocolError(f"option 'precision' must be one of {', '.join(PRECISIONS)}")
        return int(k), bool(option(request, "exact", bool, False)), precision

    def respond(self, loaded: LoadedVersion, encoded: Encoding | HotswapError, flags: EncodeFlags, release_ticket: Callable[[], None], reply: Reply, context: Any) -> None:
        def search() -> None:
            answer: Outcome | HotswapError
            try:
                answer = encoded if isinstance(encoded, HotswapError) else self._search(loaded, encoded, context)
            except HotswapError as exc:
                answer = exc
            except Exception as exc:  # noqa: BLE001 -- the request still gets its one reply
                answer = InternalError(f"{type(exc).__name__}: {exc}")
            finally:
                self._registry.release(loaded)
                release_ticket()
            reply(answer)

        self._s.workers.submit("search", search)

    def _search(self, loaded: LoadedVersion, encoded: Encoding, asked: tuple[int, bool, str | None]) -> Outcome:
        k, exact, precision = asked
        # The corpus as its files are now (replaced on disk: re-opened first), held open
        # for this search even if a newer one is swapped in meanwhile.
        corpus, problem = take(loaded, self._registry.on_event)
        name = f"{loaded.model}@{loaded.version}"
        if corpus is None:
            raise CorpusUnavailable(f"{name} has no corpus to search: {problem or 'set embeddings_path (hs index build)'}")
        queries = encoded.vectors  # the query vectors as the pipeline answered them: no wire in between
        started = time.perf_counter()
        try:
            results = [[asdict(hit) for hit in corpus.search(query, k, exact=exact, precision=precision)] for query in queries]
            described, rows, where = corpus.describe(), corpus.rows, str(corpus.where)  # while it is held open
        except CorpusError as exc:
            raise CorpusUnavailable(f"{name}: {exc}") from None
        finally:
            corpus.release()
        seconds = time.perf_counter() - started
        result = {
            "model": loaded.model,
            "version": loaded.version,
            "fingerprint": loaded.fingerprint,
            "corpus": where,
            "rows": rows,
            "k": k,
            "index": _index_used(described, exact, precision),
            "results": results,
            "search_ms": round(seconds * 1000, 3),
            # Another version's corpus, searched through a fitted map until this one's is built.
            "bridge": getattr(corpus, "bridge", None),
            "cached": encoded.cached,
        }
        return Outcome(result, [])


def _index_used(described: dict[str, Any], exact: bool, precision: str | None) -> str:
    """What answered: the float rows, a compact copy rescored by them, or the ANN index."""
    if exact or precision == "float":
        return "exact"
    if precision is not None:
        return f"{precision}+rescore"
    if described["index"] == "exact" and described.get("compact"):
        return f"{'binary' if 'binary' in described['compact'] else 'int8'}+rescore"
    return str(described["index"])


SEARCH_OP = OpSpec(
    "search",
    frozenset({"key", "deadline_ms", "no_cache", "k", "exact", "prompt", "traceparent", "precision"}),
    lambda services: SearchOp(services).prepare,
)
