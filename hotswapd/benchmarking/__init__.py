"""Comparative benchmarks while serving (``[bench]``): rounds appended to ``bench.jsonl``.

settings   the ``[bench]`` section
periodic   when a round is due, and running one without getting in the way of live traffic
history    the rows a round writes, and what they recommend (shared with ``hs bench --history``)
"""
