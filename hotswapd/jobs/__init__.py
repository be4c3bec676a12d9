"""Batch jobs: a file's rows encoded through the daemon into files, resumable.

``engine`` streams rows through one pinned version and checkpoints; a sink writes the
vectors (``sinks``: .npy + ids, .jsonl; ``parquet_sink``; the corpus builder's own);
``file_job`` is ``hs encode --input ... --output ...``.
"""
