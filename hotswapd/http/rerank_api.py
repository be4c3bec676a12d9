"""The rerank routes, in the two shapes clients already speak.

- ``POST /v1/rerank`` and ``/v2/rerank``: the shape Cohere (its SDK posts to /v2/rerank),
  Jina, Infinity and vLLM share. Request ``{"model", "query", "documents": ["text" |
  {"text": ...}], "top_n", "return_documents"}``; answer ``{"id", "model", "results":
  [{"index", "relevance_score", "document"?}], "usage": {"total_tokens"}, "meta"}``.
  Keys these APIs add that do not apply here (``max_tokens_per_doc``, ``priority``,
  ``rank_fields``) are accepted and ignored, as those servers do with each other's.
- ``POST /rerank``: Text Embeddings Inference's. Request ``{"query", "texts", "raw_scores",
  "return_text", "model"?}``; answer ``[{"index", "score", "text"?}]``, best first.

Every answer names the version that scored it (headers) and comes from the daemon's
rerank op: the same versions, rollouts, admission and cache as `hs rerank`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from hotswapd.http.openai_api import MAX_MODEL_CHARS, ApiError, json_object
from hotswapd.text.pairs import MAX_RERANK_DOCUMENTS, PAIR_SEPARATOR


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    model: str | None
    top_n: int | None = None
    return_documents: bool = False
    raw_scores: bool = False


def parse_cohere(body: bytes) -> RerankRequest:
    data = json_object(body)
    documents = data.get("documents")
    if isinstance(documents, list):
        documents = [item.get("text") if isinstance(item, dict) else item for item in documents]
    top_n = data.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ApiError(400, "'top_n' must be a positive integer", param="top_n")
    return RerankRequest(_query(data), _documents(documents, "documents"), _model(data), top_n, _flag(data, "return_documents"))


def parse_tei(body: bytes) -> RerankRequest:
    data = json_object(body)
    return RerankRequest(_query(data), _documents(data.get("texts"), "texts"), _model(data), None, _flag(data, "return_text"), _flag(data, "raw_scores"))


def _query(data: dict[str, Any]) -> str:
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "'query' must be a non-empty string", param="query")
    if PAIR_SEPARATOR in query:
        raise ApiError(400, "'query' contains a NUL character", param="query")
    return query


def _documents(documents: Any, name: str) -> list[str]:
    if not isinstance(documents, list) or not documents:
        raise ApiError(400, f"'{name}' must be a non-empty list of strings (or of {{\"text\": ...}})", param=name)
    if len(documents) > MAX_RERANK_DOCUMENTS:
        raise ApiError(400, f"{len(documents)} {name}; at most {MAX_RERANK_DOCUMENTS} in one request", param=name)
    for index, document in enumerate(documents):
        if not isinstance(document, str) or not document:
            raise ApiError(400, f"'{name}'[{index}] must be a non-empty string", param=name)
        if PAIR_SEPARATOR in document:
            raise ApiError(400, f"'{name}'[{index}] contains a NUL character", param=name)
    return documents


def _model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.partition("@")[0] or len(model) > MAX_MODEL_CHARS):
        raise ApiError(400, "'model' must be a model name (NAME or NAME@VERSION)", param="model")
    return model


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false", param=name)
    return value


def cohere_body(head: dict[str, Any], parsed: RerankRequest) -> dict[str, Any]:
    results = []
    for hit in head["results"]:
        item: dict[str, Any] = {"index": hit["index"], "relevance_score": hit["score"]}
        if parsed.return_documents:
            item["document"] = {"text": parsed.documents[hit["index"]]}
        results.append(item)
    tokens = head.get("tokens") or 0
    return {
        "id": str(uuid.uuid4()),
        "model": f"{head['model']}@{head['version']}",
        "results": results,
        "usage": {"total_tokens": tokens},
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }


def tei_body(head: dict[str, Any], parsed: RerankRequest) -> list[dict[str, Any]]:
    return [
        {"index": hit["index"], "score": hit["score"], **({"text": parsed.documents[hit["index"]]} if parsed.return_documents else {})}
        for hit in head["results"]
    ]


@dataclass(frozen=True)
class TokenizeRequest:
    texts: list[str]
    model: str | None
    prompt: str | None


def parse_tokenize(body: bytes) -> TokenizeRequest:
    """TEI's ``POST /tokenize``: ``{"inputs": "text" | ["text", ...], "prompt_name"?, "model"?}``."""
    data = json_object(body)
    inputs = data.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(item, str) and item for item in inputs):
        raise ApiError(400, "'inputs' must be a non-empty string or a list of them", param="inputs")
    if len(inputs) > MAX_RERANK_DOCUMENTS:
        raise ApiError(400, f"{len(inputs)} inputs; at most {MAX_RERANK_DOCUMENTS} in one request", param="inputs")
    if data.get("add_special_tokens") is False:
        raise ApiError(400, "'add_special_tokens': false is not supported: counts are what the model reads", param="add_special_tokens")
    prompt = data.get("prompt_name")
    if prompt is not None and (not isinstance(prompt, str) or not 0 < len(prompt) <= 64):
        raise ApiError(400, "'prompt_name' must be the name of one of the version's prompts", param="prompt_name")
    return TokenizeRequest(inputs, _model(data), prompt)


COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


@dataclass(frozen=True)
class CohereEmbedRequest:
    texts: list[str]
    model: str | None
    types: tuple[str, ...]
    dimensions: int | None = None


def parse_cohere_embed(body: bytes) -> CohereEmbedRequest:
    """Cohere's ``POST /v2/embed``: ``{"model", "texts", "input_type", "embedding_types",
    "output_dimension"}``. ``input_type`` and ``truncate`` are accepted and left to the
    version (its prompts are named by the version, its truncation by ``long_text``)."""
    data = json_object(body)
    texts = data.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) and text for text in texts):
        raise ApiError(400, "'texts' must be a non-empty list of non-empty strings", param="texts")
    if len(texts) > MAX_RERANK_DOCUMENTS:
        raise ApiError(400, f"{len(texts)} texts; at most {MAX_RERANK_DOCUMENTS} in one request", param="texts")
    types = data.get("embedding_types") or ["float"]
    if not isinstance(types, list) or not all(isinstance(kind, str) and kind in COHERE_TYPES for kind in types):
        raise ApiError(400, f"'embedding_types' must be a list of {', '.join(COHERE_TYPES)}", param="embedding_types")
    dimensions = data.get("output_dimension")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise ApiError(400, "'output_dimension' must be a positive integer", param="output_dimension")
    return CohereEmbedRequest(texts, _model(data), tuple(dict.fromkeys(types)), dimensions)
