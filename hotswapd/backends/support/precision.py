"""Reduced precision for the torch backends: which the hardware runs fast, and a gate on accuracy.

``precision = "bf16"`` runs the model under ``torch.autocast`` in bfloat16. On a CPU that
is only fast with AVX-512 BF16 or AMX instructions (elsewhere torch emulates it, slower
than fp32), and on CUDA with a GPU that supports it. ``"fp16"`` is CUDA only. A precision
the hardware cannot run fast is refused with the reason; ``"auto"`` takes bf16 where it
can and fp32 otherwise, and says why.

Every reduced path is checked when it loads against the same model in fp32 on a fixed
sample (short texts, passages, one over-length text, as the ONNX export check does): under
the version's ``min_cosine`` (the mean) it is refused with the figures, or for ``auto``
falls back to fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hotswapd.host.cpu import cpu_flags
from hotswapd.errors import ModelLoadError
from hotswapd.text.probe_texts import check_sample

Precision = Literal["fp32", "bf16", "fp16", "int8", "auto"]
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def why_not(precision: str, device: str) -> str | None:
    """None when ``precision`` runs fast on ``device`` here; otherwise the reason."""
    if precision == "fp32":
        return None
    if precision == "int8":
        return (
            'int8 runs through ONNX Runtime or OpenVINO here, not torch: set backend = "onnx" with quantize = "int8", '
            'backend = "openvino" with precision = "int8", or backend = "auto" to measure which is fastest'
        )
    if device.startswith("cuda"):
        import torch

        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU does not support bf16"
        return None
    if precision == "fp16":
        return "fp16 runs fast on CUDA only; on a CPU use bf16 (with AVX-512 BF16 or AMX) or fp32"
    if not any(flag in cpu_flags() for flag in BF16_CPU_FLAGS):
        return "bf16 runs fast on a CPU only with AVX-512 BF16 or AMX instructions, and this one has neither (torch would emulate it, slower than fp32)"
    return None


@dataclass(frozen=True)
class Choice:
    precision: str  # what runs: fp32, bf16 or fp16
    reason: str  # why, for `hs models`
    agreement: dict[str, float] | None = None  # mean/min cosine against fp32 on the check sample


def choose(requested: str, device: str, min_cosine: float, encode: Callable[[list[str], str], Any], name: str) -> Choice:
    """The precision to run ``name`` in: ``requested`` if the hardware runs it fast and it
    agrees with fp32 (``encode(texts, precision)`` gives normalised rows); for ``auto``,
    the best that does."""
    candidates = [requested] if requested != "auto" else ["bf16", "fp32"]
    refusals: list[str] = []
    for precision in candidates:
        if precision == "fp32":
            return Choice("fp32", "asked for" if requested == "fp32" else f"auto: {'; '.join(refusals)}")
        reason = why_not(precision, device)
        if reason is not None:
            refusals.append(reason)
            continue
        agreement = _agreement(encode, precision)
        if not agreement["mean_cosine"] >= min_cosine:  # NaN refuses too
            refusals.append(
                f"{precision} agrees with fp32 at mean cosine {agreement['mean_cosine']:.9g} (min {agreement['min_cosine']:.9g}) on the "
                f"{int(agreement['sample_size'])}-text check sample, below min_cosine {min_cosine}"
            )
            continue
        if requested == "auto":
            # The instructions being there does not make it faster for every model and batch:
            # auto times both on the check sample (each after one untimed pass).
            reduced, full = _seconds(encode, precision), _seconds(encode, "fp32")
            if reduced >= full:
                refusals.append(f"{precision} measured no faster than fp32 here ({reduced * 1000:.0f} ms against {full * 1000:.0f} ms on the check sample)")
                continue
            return Choice(precision, f"auto: {full / reduced:.2f}x fp32 on the check sample, and it agrees with fp32", agreement)
        return Choice(precision, "asked for", agreement)
    raise ModelLoadError(f"{name}: precision {requested} refused: {'; '.join(refusals)}")


def _seconds(encode: Callable[[list[str], str], Any], precision: str) -> float:
    import time

    texts = check_sample()
    encode(texts, precision)
    started = time.perf_counter()
    encode(texts, precision)
    return time.perf_counter() - started


def _agreement(encode: Callable[[list[str], str], Any], precision: str) -> dict[str, float]:
    import numpy as np

    texts = check_sample()
    reference = np.asarray(encode(texts, "fp32"), dtype=np.float64)  # float64: a mean of 0.9999999 must not read 1.0
    reduced = np.asarray(encode(texts, precision), dtype=np.float64)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    reduced /= np.linalg.norm(reduced, axis=1, keepdims=True)
    cosines = np.clip(np.sum(reference * reduced, axis=1), -1.0, 1.0)
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()), "sample_size": float(len(texts))}


@contextlib.contextmanager
def running_in(precision: str, device: str) -> Iterator[None]:
    """The torch context a forward pass in ``precision`` runs under."""
    if precision == "fp32":
        yield
        return
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype):
        yield


class PrecisionOptions(BaseModel):
    """The config keys of a backend that runs in reduced precision (its Options extend it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Precision = "fp32"
    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)  # a reduced precision's mean cosine to fp32, at least

    @field_validator("precision")
    @classmethod
    def _not_int8(cls, value: str) -> str:
        if value == "int8":  # refused when the config is read, not at every load
            raise ValueError(why_not("int8", "cpu"))
        return value


class ChosenPrecision:
    """What an embedder tells of its precision: in its fingerprint and in `hs models`."""

    choice: Choice = Choice("fp32", "the default")
    device: str

    @property
    def precision(self) -> str | None:
        """Part of the fingerprint (None for fp32, so fp32 versions keep the fingerprints
        they always had)."""
        return None if self.choice.precision == "fp32" else self.choice.precision

    def describe(self) -> dict[str, object]:
        facts: dict[str, object] = {"precision": self.choice.precision, "precision_reason": self.choice.reason}
        if self.choice.agreement:
            facts["agreement_with_fp32"] = self.choice.agreement
        return facts

    def encode_in(self, precision: str, texts: list[str], *, normalize: bool) -> Any:
        raise NotImplementedError

    def choose_precision(self, options: PrecisionOptions, name: str) -> None:
        """Settle the precision at load (the gate encodes the check sample twice)."""
        if options.precision != "fp32":
            self.choice = choose(options.precision, self.device, options.min_cosine, lambda texts, p: self.encode_in(p, texts, normalize=True), name)
