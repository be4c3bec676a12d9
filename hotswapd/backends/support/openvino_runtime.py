"""What the OpenVINO embed and rerank backends share: whether the runtime (and NNCF, for
int8) is installed, which versions are (part of a conversion's cache key), and compiling a
converted model for the CPU."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from hotswapd.backends.support.precision import why_not
from hotswapd.errors import ModelLoadError

INSTALL_HINT = "pip install 'hotswap[openvino]'"


def unavailable(precision: str) -> str | None:
    """Why this machine cannot run ``precision`` with OpenVINO, or None."""
    try:
        package_version("openvino")
    except PackageNotFoundError:
        return f"OpenVINO is not installed ({INSTALL_HINT})"
    if precision == "int8":
        try:
            package_version("nncf")
        except PackageNotFoundError:
            return f"int8 needs NNCF ({INSTALL_HINT})"
    return why_not(precision, "cpu") if precision == "bf16" else None


def installed(name: str) -> str:
    """The installed version of package ``name``, or "-"."""
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "-"


def compiled_for_cpu(xml: Path, precision: str, threads: int | None) -> Any:
    """``xml`` compiled for the CPU in ``precision`` (bf16 computed by the runtime)."""
    import openvino

    # LATENCY: one stream using every core for each request; the daemon runs one batch at a
    # time, so throughput streams would only split the cores between idle queues.
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        core = openvino.Core()
        return core.compile_model(core.read_model(str(xml)), "CPU", config)
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO cannot load {xml}: {exc}") from exc
