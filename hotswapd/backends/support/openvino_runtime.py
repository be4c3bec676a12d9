"""What the OpenVINO embed and rerank backends ask of this machine before they load:
whether the runtime (and NNCF, for int8) is installed, and which versions are (part of a
conversion's cache key)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from hotswapd.backends.support.precision import why_not

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
