"""Rows of texts read from data files (txt, jsonl, csv, parquet): what ``hs index build``
(and file jobs) read. Client-side: nothing here talks to the daemon."""
