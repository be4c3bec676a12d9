"""Every path this machine can run, through the daemon, against in-process fp32 (issue 17).

    python bench/bench_paths.py [--sentences 1000] [--passages 120] [--rounds 2]

all-MiniLM-L6-v2 on BBC News: short texts (sentences of 10-20 words) and passages (8
consecutive sentences, ~200 tokens), cache off, batch 32. Paths: torch fp32 and bf16
(sentence-transformers, `precision`), ONNX fp32 and int8, OpenVINO fp32, bf16 and int8,
and `backend = "auto"` (what `hs tune` chose here). Each is timed through
`Client.encode_stream` against in-process sentence-transformers fp32 on the same texts,
rounds alternated (this shared machine drifts by 10-20 %), the median counting; then the
single-text p50 latency (one text per request), and the cosine of its vectors to
in-process fp32. A path the hardware cannot run fast is listed as refused, with the
daemon's reason.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

PATHS = {
    "torch-fp32": 'backend = "sentence-transformers"\n',
    "torch-bf16": 'backend = "sentence-transformers"\nprecision = "bf16"\n',
    "onnx-fp32": 'backend = "onnx"\n',
    "onnx-int8": 'backend = "onnx"\nquantize = "int8"\n',
    "openvino-fp32": 'backend = "openvino"\n',
    "openvino-bf16": 'backend = "openvino"\nprecision = "bf16"\n',
    "openvino-int8": 'backend = "openvino"\nprecision = "int8"\n',
    "auto": 'backend = "auto"\n',
}
SINGLE_CALLS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--passages", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from hotswapd.errors import HotswapError

    pool = sentences(args.sentences + 8 * args.passages)
    sets = {"short": pool[: args.sentences], "passages": [" ".join(pool[args.sentences + 8 * i : args.sentences + 8 * i + 8]) for i in range(args.passages)]}
    work = Path(tempfile.mkdtemp(prefix="hs-bench-paths-"))
    model_dir = minilm_dir()
    versions = "".join(f"[models.minilm.versions.{name}]\n{body}source = \"{model_dir}\"\n" for name, body in PATHS.items())
    config = write_config(work / "config.toml", f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "torch-fp32"\n{versions}')
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(work / "cache")}, wait=900)
    torch.set_num_threads(2)
    reference_model = SentenceTransformer(str(model_dir), device="cpu")
    reference = {kind: reference_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True) for kind, texts in sets.items()}
    rates: dict[tuple[str, str], list[float]] = {}
    cosines: dict[tuple[str, str], tuple[float, float]] = {}
    single: dict[str, float] = {}
    refused: dict[str, str] = {}
    chosen = ""
    tune_table = ""
    try:
        with daemon.client(timeout=1800) as client:
            wait_ready(client, wait=900)
            for name in PATHS:  # loads, exports and (auto) tunes, before anything is timed
                try:
                    client.encode(["warm-up"], f"minilm@{name}")
                except HotswapError as exc:
                    refused[name] = exc.message
            details = {item["version"]: item for model in client.models() for item in model["version_detail"]}
            chosen = details["auto"].get("path") or ""
            for _ in range(args.rounds):
                for kind, texts in sets.items():
                    started = time.perf_counter()
                    reference_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
                    rates.setdefault(("in-process", kind), []).append(len(texts) / (time.perf_counter() - started))
                    for name in PATHS:
                        if name in refused:
                            continue
                        started = time.perf_counter()
                        got = np.vstack([r.embeddings for r in client.encode_stream([texts[i : i + 256] for i in range(0, len(texts), 256)], f"minilm@{name}")])
                        rates.setdefault((name, kind), []).append(len(texts) / (time.perf_counter() - started))
                        row_cosines = np.sum(got * reference[kind], axis=1)
                        cosines[(name, kind)] = (float(row_cosines.mean()), float(row_cosines.min()))
            # The command a user types, for the automatic choice: `hs encode -f npy` on stdin.
            hs = Path(sys.executable).with_name("hs")
            env = {**os.environ, "HOTSWAPD_SOCKET": daemon.endpoint, "HOTSWAPD_NO_AUTOSTART": "1"}
            for kind, texts in sets.items():
                lines = "".join(text.replace("\n", " ") + "\n" for text in texts).encode()
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    done = subprocess.run([str(hs), "encode", "-m", "minilm@auto", "-f", "npy"], input=lines, capture_output=True, env=env, check=True)
                    rates.setdefault(("hs encode auto", kind), []).append(len(texts) / (time.perf_counter() - started))
                got = np.load(io.BytesIO(done.stdout))
                row_cosines = np.sum(got * reference[kind], axis=1)
                cosines[("hs encode auto", kind)] = (float(row_cosines.mean()), float(row_cosines.min()))
            tuned = subprocess.run([str(hs), "tune", "minilm@auto"], capture_output=True, env={**env, "COLUMNS": "160"}, check=True)
            tune_table = tuned.stdout.decode() + tuned.stderr.decode()
            for name in ("in-process", *PATHS):
                if name in refused:
                    continue
                times = []
                for text in sets["short"][:SINGLE_CALLS]:
                    started = time.perf_counter()
                    if name == "in-process":
                        reference_model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
                    else:
                        client.encode([text], f"minilm@{name}")
                    times.append((time.perf_counter() - started) * 1000)
                single[name] = statistics.median(times)
    finally:
        daemon.stop()
    base = {kind: statistics.median(rates[("in-process", kind)]) for kind in sets}
    print(f"\n{len(sets['short']):,} BBC sentences and {len(sets['passages'])} passages of 8 sentences; cache off; median of {args.rounds} rounds")
    print(f"in-process sentence-transformers fp32: {base['short']:.0f} short/s, {base['passages']:.1f} passages/s, single p50 {single['in-process']:.1f} ms")
    print(f"{'path (daemon)':<16} {'short/s':>8} {'ratio':>7} {'passages/s':>11} {'ratio':>7} {'single p50':>11} {'cos mean':>9} {'cos min':>8}")
    for name in (*PATHS, "hs encode auto"):
        label = f"auto={chosen}" if name == "auto" else ("`hs encode -f npy` auto" if name == "hs encode auto" else name)
        if name in refused:
            print(f"{label:<16} refused: {refused[name]}")
            continue
        short, passages = statistics.median(rates[(name, "short")]), statistics.median(rates[(name, "passages")])
        mean = min(cosines[(name, kind)][0] for kind in sets)
        lowest = min(cosines[(name, kind)][1] for kind in sets)
        print(
            f"{label:<16} {short:8.0f} {short / base['short']:6.2f}x {passages:11.1f} {passages / base['passages']:6.2f}x "
            f"{(f'{single[name]:8.1f} ms') if name in single else '-':>11} {mean:9.4f} {lowest:8.4f}"
        )
    print(f"\n$ hs tune minilm@auto\n{tune_table}")


if __name__ == "__main__":
    main()
