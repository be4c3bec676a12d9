"""A (query, document) pair as one text: how a rerank request rides the encode pipeline.

The pipeline batches, caches, admits, counts and truncates texts; a rerank version's
"text" is its pair joined by a separator no request text may contain (the rerank op
refuses it), and its "vector" is the pair's one relevance score. One path for both tasks.
"""

from __future__ import annotations

PAIR_SEPARATOR = "\x00"


def join_pair(query: str, document: str) -> str:
    return f"{query}{PAIR_SEPARATOR}{document}"


def split_pair(text: str) -> tuple[str, str]:
    """The pair a text carries; a plain text (a load's probe, a warm-up) is a query alone."""
    query, _, document = text.partition(PAIR_SEPARATOR)
    return query, document
MAX_RERANK_DOCUMENTS = 4096  # documents in one rerank request (each a pair to score)
