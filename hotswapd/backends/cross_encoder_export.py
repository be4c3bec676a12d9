"""Export a cross-encoder (its relevance logits) to ONNX or OpenVINO, optionally quantise it
to int8, and check it against sentence-transformers' CrossEncoder: run as a subprocess by
the ONNX and OpenVINO rerank backends (``python -m hotswapd.backends.cross_encoder_export``),
so the daemon never imports torch. Writes ``model.onnx`` (ONNX) or ``model.xml``/``model.bin``
(OpenVINO) and ``check.json`` into ``--out``.

int8 on ONNX is ONNX Runtime's dynamic quantisation; on OpenVINO it is NNCF's post-training
quantisation of weights and activations, calibrated on (query, document) pairs built from
:func:`hotswapd.text.probe_texts.calibration_texts` (none of the check's texts).

The check scores 8 queries x 16 documents of the fixed check sample with both, and records
the Spearman rank correlation of each query's document order (its minimum and mean) and
the largest difference of sigmoid scores, computed in the precision the model will serve in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.backends.onnx_export import export_output, quantize_int8, write_check
from hotswapd.host.load_steps import write_step_file
from hotswapd.text.pairs import join_pair
from hotswapd.text.probe_texts import calibration_texts, check_sample

QUERIES = 8
CALIBRATION_PAIRS = 64


def export_fp32(source: Path, out: Path, trust_remote_code: bool) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code, attn_implementation="eager",
    )
    export_output(model, "logits", {0: "batch"}, out)


def ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank, ties given their average rank (as Spearman's coefficient has it):
    a scorer that gives every document the same score orders nothing."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side holds a NaN (a gate refuses it),
    1.0 when both score every document alike, 0.0 when only one does."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    spread_a, spread_b = float((ra * ra).sum()), float((rb * rb).sum())
    if not spread_a or not spread_b:
        return 1.0 if not spread_a and not spread_b else 0.0
    return float((ra * rb).sum() / np.sqrt(spread_a * spread_b))


def check_pairs() -> tuple[list[str], list[str]]:
    texts = check_sample()
    return texts[:QUERIES], (texts[QUERIES : QUERIES + 16] if len(texts) >= QUERIES + 16 else texts)


def agreement(reference: Any, served: Any) -> dict[str, float]:
    """Rank agreement and score difference of ``served`` (an encoder of joined pairs giving
    logits) against ``reference``'s logits, per check query. ``reference`` is a callable
    from a list of (query, document) tuples to logits."""
    queries, documents = check_pairs()
    correlations, differences = [], []
    for query in queries:
        expected = np.asarray(reference([(query, d) for d in documents]), dtype=np.float64).reshape(-1)
        got = served.encode([join_pair(query, d) for d in documents], normalize=False)[:, 0].astype(np.float64)
        correlations.append(spearman(expected, got))
        differences.append(float(np.max(np.abs(1 / (1 + np.exp(-expected)) - 1 / (1 + np.exp(-got))))))
    return {"spearman_min": min(correlations), "spearman_mean": float(np.mean(correlations)), "max_score_diff": max(differences),
            "queries": len(queries), "documents": len(documents)}


def torch_logits(source: Path, trust_remote_code: bool) -> Any:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(source), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code)
    return lambda pairs: model.predict(pairs, activation_fn=torch.nn.Identity())


def quantize_openvino_int8(model: Any, source: Path) -> Any:
    import nncf
    from tokenizers import Tokenizer

    from hotswapd.backends.support.graph_cross_encoder import max_length

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length(source), strategy="longest_first")
    tokenizer.no_padding()
    texts = calibration_texts()
    pairs = [(texts[i % len(texts)], texts[(i * 7 + 3) % len(texts)]) for i in range(CALIBRATION_PAIRS)]
    names = {name for port in model.inputs for name in port.get_names()}

    def feeds(pair: tuple[str, str]) -> dict[str, np.ndarray]:
        encoding = tokenizer.encode(*pair)
        named = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask, "token_type_ids": encoding.type_ids}
        return {name: np.asarray([value], dtype=np.int64) for name, value in named.items() if name in names}

    return nncf.quantize(model, nncf.Dataset(pairs, feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(pairs))


def served_onnx(args: argparse.Namespace, fp32: Path) -> Any:
    import onnxruntime

    from hotswapd.backends.onnx_rerank import OnnxCrossEncoder
    from hotswapd.backends.support.graph_cross_encoder import max_length

    candidate = args.out / "model.onnx"
    if args.quantize == "int8":
        write_step_file(args.out, "quantising to int8")
        quantize_int8(fp32, candidate)
        fp32.unlink()
    session = onnxruntime.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    return OnnxCrossEncoder(session, args.source / "tokenizer.json", max_length(args.source), "cpu", 16)


def served_openvino(args: argparse.Namespace, fp32: Path) -> Any:
    import openvino

    from hotswapd.backends.openvino_rerank import OpenVinoCrossEncoder
    from hotswapd.backends.support.graph_cross_encoder import max_length

    write_step_file(args.out, "converting to OpenVINO")
    model = openvino.Core().read_model(str(fp32))
    if args.precision == "int8":
        write_step_file(args.out, "quantising to int8 (NNCF, calibrated on pairs)")
        model = quantize_openvino_int8(model, args.source)
    xml = args.out / "model.xml"
    openvino.save_model(model, str(xml), compress_to_fp16=False)  # fp16 weights would change fp32 scores
    fp32.unlink()
    return OpenVinoCrossEncoder.create(xml, args.source / "tokenizer.json", max_length(args.source), precision=args.precision, batch_size=16, threads=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runtime", choices=["onnx", "openvino"], default="onnx")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="onnx: ONNX Runtime's dynamic int8")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32", help="openvino")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / ("model.onnx" if args.runtime == "onnx" and args.quantize == "none" else "model.fp32.onnx")
    write_step_file(args.out, "exporting the cross-encoder to ONNX")
    export_fp32(args.source, fp32, args.trust_remote_code)
    served = served_onnx(args, fp32) if args.runtime == "onnx" else served_openvino(args, fp32)
    write_step_file(args.out, "checking its ranks against torch")
    found = agreement(torch_logits(args.source, args.trust_remote_code), served)
    served.close()
    if args.runtime == "onnx":
        write_check(args.out, found, started, quantize=args.quantize)
    else:
        write_check(args.out, found, started, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
