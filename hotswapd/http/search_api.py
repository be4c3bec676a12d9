"""``POST /v1/search``: hotswap's own route (OpenAI has none), shaped like its neighbours.

Request: ``{"model": "NAME[@VERSION]", "query": "text" | ["text", ...], "k": 10, "exact": false}``.
Answer: ``{"object": "list", "model": "NAME@VERSION", "data": [{"object": "search_result",
"index": i, "results": [{"row", "score", "id", "text"}, ...]}], "rows": N, "search_ms": t}``:
one entry per query, best first, all scored by the version named in ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hotswapd.corpus.search_op import DEFAULT_K, MAX_QUERIES, PRECISIONS
from hotswapd.corpus.store import MAX_K
from hotswapd.http.openai_api import MAX_MODEL_CHARS, ApiError, json_object


@dataclass(frozen=True)
class SearchRequest:
    queries: list[str]
    model: str | None
    k: int
    exact: bool = False
    precision: str | None = None  # float, binary or int8: which copy of the corpus is scanned
    rerank: str | None = None  # a rerank model that orders the candidates (two stages)
    candidates: int = 100


def parse_search(body: bytes) -> SearchRequest:
    data = json_object(body)
    queries = data.get("query")
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise ApiError(400, "'query' must be a non-empty string or a list of them", param="query")
    if len(queries) > MAX_QUERIES:
        raise ApiError(400, f"{len(queries)} queries; at most {MAX_QUERIES} in one request", param="query")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.partition("@")[0] or len(model) > MAX_MODEL_CHARS):
        raise ApiError(400, "'model' must be a model name (NAME or NAME@VERSION)", param="model")
    k = data.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= MAX_K:
        raise ApiError(400, f"'k' must be an integer in 1..{MAX_K}", param="k")
    exact = data.get("exact", False)
    if not isinstance(exact, bool):
        raise ApiError(400, "'exact' must be true or false", param="exact")
    rerank = data.get("rerank")
    if rerank is not None and (not isinstance(rerank, str) or not rerank.partition("@")[0] or len(rerank) > MAX_MODEL_CHARS):
        raise ApiError(400, "'rerank' must be a rerank model's name (NAME or NAME@VERSION)", param="rerank")
    candidates = data.get("candidates", 100)
    if isinstance(candidates, bool) or not isinstance(candidates, int) or not 0 < candidates <= MAX_K:
        raise ApiError(400, f"'candidates' must be an integer in 1..{MAX_K}", param="candidates")
    if rerank is not None and len(queries) != 1:
        raise ApiError(400, "'rerank' takes one query", param="query")
    precision = data.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise ApiError(400, f"'precision' must be one of {', '.join(PRECISIONS)}", param="precision")
    return SearchRequest(queries, model, k, exact, precision, rerank, candidates)


def search_body(head: dict[str, Any], reranker: dict[str, Any] | None = None) -> dict[str, Any]:
    data = [{"object": "search_result", "index": index, "results": results} for index, results in enumerate(head["results"])]
    body = {"object": "list", "model": f"{head['model']}@{head['version']}", "data": data, "rows": head["rows"], "search_ms": head["search_ms"]}
    if reranker is not None:  # two stages: both versions named
        body["reranker"] = f"{reranker['model']}@{reranker['version']}"
    return body


def reranked(found: dict[str, Any], scored: dict[str, Any], k: int) -> dict[str, Any]:
    """The first stage's hits ordered by the reranker's scores (the best ``k``); each keeps
    its cosine as ``retrieval_score``."""
    hits = found["results"][0]
    results = [{**hits[item["index"]], "score": item["score"], "retrieval_score": hits[item["index"]]["score"]} for item in scored["results"][:k]]
    return {**found, "results": [results]}
