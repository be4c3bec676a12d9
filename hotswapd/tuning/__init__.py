"""Which way of running a model is fastest on this machine, at the accuracy asked for.

The same weights can run under torch in fp32 or bf16, as an ONNX graph in fp32 or int8,
or under OpenVINO in fp32, bf16 or int8; which is fastest depends on the CPU (AVX2 only,
AVX-512 VNNI, BF16, AMX) and on the library versions. ``hs tune`` and ``backend = "auto"``
measure every path this machine can run, drop those whose vectors do not agree with fp32
sentence-transformers, choose the fastest, and cache the choice keyed by what decided it.

- :mod:`record`: the measured table, the choice, and the cache key; read back strictly.
- :mod:`paths`: the candidate paths and whether this machine can run each.
- :mod:`measure`: the measurement, run in a subprocess (it imports torch).
- :mod:`run`: the cached choice, or measure now.
"""
