"""The checks of ``hs doctor`` about the Python environment and the CPU: the backends'
libraries, and the fastest accurate path this CPU's features point to.

Libraries are looked up with ``importlib.util.find_spec``, never imported: importing torch
alone takes seconds, and ``hs doctor`` should answer at once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from hotswap_cli.doctor_checks import Check

# The modules each built-in backend imports when it loads (hotswapd/backends/*.py).
BACKEND_LIBRARIES: dict[str, tuple[str, ...]] = {
    "sentence-transformers": ("sentence_transformers", "torch"),
    "transformers": ("transformers", "torch"),
    "onnx": ("onnxruntime", "tokenizers"),
    "sagemaker": ("boto3", "tokenizers"),
    "openvino": ("openvino", "nncf", "tokenizers"),
    # auto measures every path against fp32 sentence-transformers (hotswapd/tuning).
    "auto": ("sentence_transformers", "torch"),
    "ensemble": (),  # its members' backends are checked as theirs
}
# What the one-off ONNX export of a model directory runs (hotswapd/backends/onnx_export.py).
ONNX_EXPORT_LIBRARIES = ("torch", "transformers", "sentence_transformers", "onnx")
# The pip extra of pyproject.toml that installs each module.
EXTRA_OF = {
    "sentence_transformers": "sentence-transformers",
    "torch": "sentence-transformers",
    "transformers": "sentence-transformers",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "tokenizers": "onnx",
    "boto3": "aws",
    "openvino": "openvino",
    "nncf": "openvino",
}

# CPU features -> the fastest accurate path, best first; the first row whose flags are all
# present wins. Measured (docs/benchmarks.md, bench_backends, all-MiniLM-L6-v2): on an AVX2-only CPU
# ONNX int8 ran 1.90x sentence-transformers at mean cosine 0.992 (ONNX fp32: 1.36x, cosine
# 1.0000). VNNI (AVX-512 or AVX-VNNI) and AMX add int8 dot-product instructions that
# onnxruntime's int8 kernels use, so int8 gains more there; AVX-512 without VNNI still runs
# int8 through the same multiply-add as AVX2.
_EXACT = "ONNX or OpenVINO fp32 (1.3-1.4x, cosine 1.0) where a version needs exact vectors"
_TUNE = "; `hs tune MODEL` (or backend = \"auto\") measures every path on this machine"
CPU_PATHS: tuple[tuple[frozenset[str], str, str], ...] = (
    (frozenset({"amx_tile", "amx_int8"}), "AMX", "int8 (OpenVINO or ONNX) is the fastest accurate path (AMX runs its int8 matmuls)" + _TUNE),
    (frozenset({"avx512_vnni"}), "AVX-512 VNNI", "OpenVINO int8 was the fastest accurate path on a Zen 4 (3.5x sentence-transformers, mean cosine 0.994)" + _TUNE),
    (frozenset({"avx_vnni"}), "AVX-VNNI", "int8 (OpenVINO or ONNX) is the fastest accurate path" + _TUNE),
    (frozenset({"avx512f"}), "AVX-512 without VNNI", "int8 is fastest, as on AVX2; " + _EXACT + _TUNE),
    (frozenset({"avx2"}), "AVX2 only", "ONNX int8 is fastest (1.9x, mean cosine 0.992, measured); " + _EXACT + _TUNE),
    (frozenset({"asimddp"}), "Arm dot product", "the ONNX int8 backend is the fastest accurate path" + _TUNE),
    (frozenset({"asimd"}), "Arm NEON", "ONNX fp32 is the safe fast path" + _TUNE),
)
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
               "asimd", "asimddp", "i8mm", "bf16", "sve")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package; a module with no __spec__
        return False


def _install_hint(modules: Iterable[str]) -> str:
    extras = sorted({EXTRA_OF.get(module, module) for module in modules})
    return f"pip install 'hotswap[{','.join(extras)}]'"


def backend_checks(used: set[str] | None) -> list[Check]:
    """Every built-in backend plus any the config names. ``used`` is None when the config
    did not load: a missing library is then a warning, not a failure."""
    rows = []
    for name in sorted(set(BACKEND_LIBRARIES) | (used or set())):
        in_use = used is not None and name in used
        modules = BACKEND_LIBRARIES.get(name)
        if modules is None:
            rows.append(_plugin_check(name))
            continue
        missing = [module for module in modules if not installed(module)]
        note = " (used by the config)" if in_use else ""
        if not modules:
            rows.append(Check("backend", "ok", f"{name}: built in{note}"))
        elif not missing:
            rows.append(Check("backend", "ok", f"{name}: {', '.join(modules)} importable{note}"))
        else:
            status = "fail" if in_use else "warn"
            rows.append(Check("backend", status, f"{name}: {', '.join(missing)} not installed{note}", _install_hint(missing)))
    if used and used & {"onnx", "openvino"}:
        missing = [module for module in ONNX_EXPORT_LIBRARIES if not installed(module)]
        if missing:
            rows.append(Check("backend", "warn", f"onnx: a version whose source has no .onnx file is exported once, which needs "
                              f"{', '.join(missing)} (not installed)", _install_hint(missing)))
    return rows


def _plugin_check(name: str) -> Check:
    from importlib.metadata import entry_points

    targets = [entry.value for entry in entry_points(group="hotswapd.backends") if entry.name == name]
    if not targets:
        return Check("backend", "fail", f"{name}: no installed package provides this backend",
                     f"pip install the plugin that registers {name!r} under the entry-point group hotswapd.backends")
    module = targets[0].partition(":")[0]
    if not installed(module):
        return Check("backend", "fail", f"{name}: plugin module {module} not found", "reinstall the plugin that provides it")
    return Check("backend", "ok", f"{name}: plugin module {module} importable (used by the config)")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``); None when unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def cpu_check(cpuinfo: Path = Path("/proc/cpuinfo")) -> Check:
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return Check("cpu", "warn", f"cannot read CPU flags from {cpuinfo}", "compare the backends with hs bench")
    shown = " ".join(flag for flag in SHOWN_FLAGS if flag in flags) or "none of note"
    for needed, label, advice in CPU_PATHS:
        if needed <= flags:
            return Check("cpu", "ok", f"{label} ({shown}): {advice}")
    return Check("cpu", "warn", f"no AVX2 or NEON ({shown}): inference will be slow", "prefer small models; compare backends with hs bench")
