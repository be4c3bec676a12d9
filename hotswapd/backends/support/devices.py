"""Choosing a device: ``auto`` takes a GPU when the backend's library sees one."""

from __future__ import annotations

import logging

from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)


def pick_device(requested: str, fallback: str | None, has_cuda: bool, library: str) -> str:
    """``auto`` -> cuda or cpu; ``cuda`` without a GPU fails, or falls back when allowed."""
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        if fallback == "cpu":
            log.warning("device 'cuda' requested but %s sees no CUDA device: falling back to cpu", library)
            return "cpu"
        raise ModelLoadError(f"device 'cuda' was requested but {library} sees no CUDA device (set fallback = \"cpu\" to run on the CPU instead)")
    return requested


def torch_device(requested: str, fallback: str | None) -> str:
    import torch

    return pick_device(requested, fallback, torch.cuda.is_available(), "torch")
