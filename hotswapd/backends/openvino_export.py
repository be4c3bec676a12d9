"""Convert a transformers model to OpenVINO, optionally quantise it to int8, and check it.

Run as a subprocess by the OpenVINO backend (``python -m hotswapd.backends.openvino_export``),
so the daemon that serves the converted model never imports torch. It exports the model to
ONNX (the ONNX backend's exporter), converts that with OpenVINO, and for ``int8`` quantises
weights and activations with NNCF's post-training quantisation, calibrated on
:func:`hotswapd.text.probe_texts.calibration_texts`. It writes ``model.xml``/``model.bin`` and
``check.json`` (mean and minimum cosine against sentence-transformers on the check sample,
computed in the precision the model will be served in) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hotswapd.host.load_steps import write_step_file
from hotswapd.backends.support.model_files import read_layout
from hotswapd.backends.onnx_export import agreement_of, export_fp32, write_check
from hotswapd.backends.support.tokenizing import TextTokenizer
from hotswapd.text.probe_texts import calibration_texts


def quantize_int8(model: object, source: Path, input_names: set[str]) -> object:
    import nncf

    layout = read_layout(source)
    tokenizer = TextTokenizer(layout.tokenizer_file, layout.max_seq_length)
    batches = list(tokenizer.batches(calibration_texts(), 4))

    def feeds(batch: object) -> dict[str, object]:
        named = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "token_type_ids": batch.token_type_ids}  # type: ignore[attr-defined]
        return {name: value for name, value in named.items() if name in input_names}

    return nncf.quantize(model, nncf.Dataset(batches, feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True, help="model directory to convert")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    import openvino

    from hotswapd.backends.openvino import OpenVinoEmbedder

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_file = args.out / "model.onnx"
    write_step_file(args.out, "exporting to ONNX")
    export_fp32(args.source, onnx_file, args.trust_remote_code)
    write_step_file(args.out, "converting to OpenVINO")
    model = openvino.Core().read_model(str(onnx_file))
    if args.precision == "int8":
        write_step_file(args.out, "quantising to int8 (NNCF)")
        model = quantize_int8(model, args.source, {name for port in model.inputs for name in port.get_names()})
    xml = args.out / "model.xml"
    openvino.save_model(model, str(xml), compress_to_fp16=False)  # fp16 weights would change fp32 vectors
    onnx_file.unlink()
    layout = read_layout(args.source)
    embedder = OpenVinoEmbedder.create(xml, layout, layout.pooling or "mean", precision=args.precision, batch_size=8, threads=None)
    write_step_file(args.out, "checking it against torch")
    check = agreement_of(embedder, args.source, args.trust_remote_code)
    write_check(args.out, check, started, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
