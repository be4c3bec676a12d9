"""Export a transformers model to ONNX, optionally quantise it, and check it against torch.

Run as a subprocess by the ONNX backend (``python -m hotswapd.backends.onnx_export``), so
the daemon that serves the ONNX file never imports torch. It writes ``model.onnx`` and
``check.json`` into ``--out``, and prints the check as one JSON line.

The check encodes a fixed sample with sentence-transformers (the reference) and with the
new file through the ONNX backend's own serving code, and records the mean and minimum
cosine. The backend compares them with the version's ``min_cosine``: int8 accuracy
depends on the CPU's instruction set, so it is measured on the machine that will serve.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.host.load_steps import write_step_file
from hotswapd.backends.support.model_files import read_layout
from hotswapd.backends.onnx import OPSET
from hotswapd.text.probe_texts import check_sample


def export_fp32(source: Path, out: Path, trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoModel

    layout = read_layout(source)
    model = AutoModel.from_pretrained(
        str(layout.transformer_dir),
        local_files_only=True,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        attn_implementation="eager",  # traces into plain ops every ONNX runtime has
    )
    export_output(model, "last_hidden_state", {0: "batch", 1: "sequence"}, out)


def export_output(model: Any, output: str, output_axes: dict[int, str], out: Path) -> None:
    """Trace ``model`` (a transformers model, eval mode) into ONNX with its token inputs and
    one named output (``last_hidden_state`` of an embedder, ``logits`` of a cross-encoder)."""
    import torch

    model.eval()
    accepted = inspect.signature(model.forward).parameters
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]

    class Output(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return getattr(self.model(**dict(zip(names, tensors, strict=True))), output)

    dummy = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with torch.no_grad():
        torch.onnx.export(Output(), dummy, str(out), input_names=names, output_names=[output], dynamic_axes={**axes, output: output_axes},
                          opset_version=OPSET, dynamo=False)


def quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights with reduce_range: ORT's per-tensor default loses much more
    # accuracy on CPUs without VNNI (AVX2 only), at the same speed.
    quantize_dynamic(str(fp32), str(out), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)


def agreement(reference: Path, candidate: Path, tokenizer_dir: Path, trust_remote_code: bool) -> dict[str, float]:
    from hotswapd.backends.onnx import OnnxEmbedder

    layout = read_layout(tokenizer_dir)
    embedder = OnnxEmbedder.create(candidate, layout, layout.pooling or "mean", device="cpu", batch_size=8, threads=None)
    return agreement_of(embedder, reference, trust_remote_code)


def agreement_of(embedder: Any, reference: Path, trust_remote_code: bool) -> dict[str, float]:
    """Mean and minimum cosine of ``embedder``'s vectors against sentence-transformers
    (fp32) on the fixed check sample."""
    from sentence_transformers import SentenceTransformer

    texts = check_sample()
    model = SentenceTransformer(str(reference), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code)
    # In float64: in float32 a mean cosine of 0.999999999 reads 1.0, and passes any gate.
    expected = np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float64)
    got = np.asarray(embedder.encode(texts, normalize=True), dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cosines = np.clip(np.sum(expected * got, axis=1), -1.0, 1.0)
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()), "sample_size": len(texts)}


def write_check(out: Path, check: dict[str, Any], started: float, **facts: object) -> None:
    """check.json beside the converted model (what the backend reads back), and on stdout."""
    check.update(facts, seconds=round(time.perf_counter() - started, 2), created=time.time())
    (out / "check.json").write_text(json.dumps(check, indent=1))
    sys.stdout.write(json.dumps(check) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, help="model directory to export (omit with --onnx)")
    parser.add_argument("--onnx", type=Path, help="an existing ONNX file to check instead of exporting")
    parser.add_argument("--reference", type=Path, required=True, help="sentence-transformers directory to compare with")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quantize", choices=["none", "int8"], default="none")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    candidate = args.onnx
    if candidate is None:
        candidate = args.out / "model.onnx"
        fp32 = candidate if args.quantize == "none" else args.out / "model.fp32.onnx"
        write_step_file(args.out, "exporting to ONNX")
        export_fp32(args.source, fp32, args.trust_remote_code)
        if args.quantize == "int8":
            write_step_file(args.out, "quantising to int8")
            quantize_int8(fp32, candidate)
            fp32.unlink()
    tokenizer_dir = args.source or args.reference
    write_step_file(args.out, "checking it against torch")
    check = agreement(args.reference, candidate, tokenizer_dir, args.trust_remote_code)
    write_check(args.out, check, started, quantize=args.quantize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
