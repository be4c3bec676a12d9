"""Every path this machine can run, through the daemon, against in-process fp32 (issue 17).

    python bench/bench_paths.py [--sentences 1000] [--rounds 2]

all-MiniLM-L6-v2 on BBC News sentences (short texts), cache off, batch 32. Paths: torch
fp32 and bf16 (sentence-transformers backend, `precision`), ONNX fp32 and int8. Each is
timed through `Client.encode_stream` against in-process sentence-transformers fp32, rounds
alternated (this shared machine drifts by 10-20 %), the median counting; the cosine of its
vectors to in-process fp32 beside it. A path the hardware cannot run fast is listed as
refused, with the daemon's reason.
"""

from __future__ import annotations

import argparse
import statistics
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
    "torch fp32": 'backend = "sentence-transformers"\n',
    "torch bf16": 'backend = "sentence-transformers"\nprecision = "bf16"\n',
    "onnx fp32": 'backend = "onnx"\n',
    "onnx int8": 'backend = "onnx"\nquantize = "int8"\n',
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from hotswapd.errors import HotswapError

    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-paths-"))
    model_dir = minilm_dir()
    versions = "".join(f'[models.minilm.versions.{name.replace(" ", "-")}]\n{body}source = "{model_dir}"\n' for name, body in PATHS.items())
    config = write_config(work / "config.toml", f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "torch-fp32"\n{versions}')
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(work / "cache")}, wait=900)
    torch.set_num_threads(2)
    reference_model = SentenceTransformer(str(model_dir), device="cpu")
    reference = reference_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    rates: dict[str, list[float]] = {}
    cosines: dict[str, tuple[float, float]] = {}
    refused: dict[str, str] = {}
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            for name in PATHS:
                try:
                    client.encode(["warm-up"], f"minilm@{name.replace(' ', '-')}")
                except HotswapError as exc:
                    refused[name] = exc.message
            for _ in range(args.rounds):
                started = time.perf_counter()
                reference_model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
                rates.setdefault("in-process fp32", []).append(len(texts) / (time.perf_counter() - started))
                for name in PATHS:
                    if name in refused:
                        continue
                    started = time.perf_counter()
                    got = np.vstack([r.embeddings for r in client.encode_stream([texts[i : i + 256] for i in range(0, len(texts), 256)], f"minilm@{name.replace(' ', '-')}")])
                    rates.setdefault(name, []).append(len(texts) / (time.perf_counter() - started))
                    row_cosines = np.sum(got * reference, axis=1)
                    cosines[name] = (float(row_cosines.mean()), float(row_cosines.min()))
    finally:
        daemon.stop()
    base = statistics.median(rates["in-process fp32"])
    print(f"\n{len(texts):,} BBC sentences, cache off, median of {args.rounds} rounds; in-process sentence-transformers fp32: {base:.0f} texts/s")
    print(f"{'path (daemon)':<14} {'texts/s':>8} {'ratio':>7} {'cos mean':>9} {'cos min':>8}")
    for name in PATHS:
        if name in refused:
            print(f"{name:<14} refused: {refused[name]}")
            continue
        rate = statistics.median(rates[name])
        print(f"{name:<14} {rate:8.0f} {rate / base:6.2f}x {cosines[name][0]:9.4f} {cosines[name][1]:8.4f}")


if __name__ == "__main__":
    main()
