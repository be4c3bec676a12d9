"""Rerankers: a rerank version's relevance scores for (query, document) pairs, served on the
encode pipeline (batching, admission, cache, health, rollouts) as one-column "vectors"."""
