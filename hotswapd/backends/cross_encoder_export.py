"""Export a cross-encoder to ONNX (its relevance logits), optionally quantise it to int8, and
check it against sentence-transformers' CrossEncoder: run as a subprocess by the ONNX
rerank backend (``python -m hotswapd.backends.cross_encoder_export``), so the daemon never
imports torch. Writes ``model.onnx`` and ``check.json`` into ``--out``.

The check scores 8 queries x 16 documents of the fixed check sample with both, and records
the Spearman rank correlation of each query's document order (its minimum and mean) and
the largest difference of sigmoid scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hotswapd.backends.onnx_export import export_output, quantize_int8, write_check
from hotswapd.host.load_steps import write_step_file
from hotswapd.text.pairs import join_pair
from hotswapd.text.probe_texts import check_sample

QUERIES = 8


def export_fp32(source: Path, out: Path, trust_remote_code: bool) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code, attn_implementation="eager",
    )
    export_output(model, "logits", {0: "batch"}, out)


def ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 1.0


def check(source: Path, candidate: Path, trust_remote_code: bool) -> dict[str, float]:
    import onnxruntime
    import torch
    from sentence_transformers import CrossEncoder

    from hotswapd.backends.onnx_rerank import OnnxCrossEncoder, max_length

    texts = check_sample()
    queries, documents = texts[:QUERIES], texts[QUERIES : QUERIES + 16] if len(texts) >= QUERIES + 16 else texts
    reference = CrossEncoder(str(source), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code)
    served = OnnxCrossEncoder(onnxruntime.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]), source / "tokenizer.json", max_length(source), "cpu", 16)
    correlations, differences = [], []
    for query in queries:
        expected = np.asarray(reference.predict([(query, d) for d in documents], activation_fn=torch.nn.Identity()), dtype=np.float64)
        got = served.encode([join_pair(query, d) for d in documents], normalize=False)[:, 0].astype(np.float64)
        correlations.append(spearman(expected, got))
        differences.append(float(np.max(np.abs(1 / (1 + np.exp(-expected)) - 1 / (1 + np.exp(-got))))))
    return {"spearman_min": min(correlations), "spearman_mean": float(np.mean(correlations)), "max_score_diff": max(differences),
            "queries": len(queries), "documents": len(documents)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quantize", choices=["none", "int8"], default="none")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    candidate = args.out / "model.onnx"
    fp32 = candidate if args.quantize == "none" else args.out / "model.fp32.onnx"
    write_step_file(args.out, "exporting the cross-encoder to ONNX")
    export_fp32(args.source, fp32, args.trust_remote_code)
    if args.quantize == "int8":
        write_step_file(args.out, "quantising to int8")
        quantize_int8(fp32, candidate)
        fp32.unlink()
    write_step_file(args.out, "checking its ranks against torch")
    write_check(args.out, check(args.source, candidate, args.trust_remote_code), started, quantize=args.quantize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
