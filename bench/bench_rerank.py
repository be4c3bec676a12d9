"""Rerank throughput (issue 30): pairs/s through the daemon against sentence-transformers'
`CrossEncoder.predict` in process, on the same pairs, rounds interleaved.

    python bench/bench_rerank.py --queries 40 --documents 32 --rounds 3

No package on the index ships a real cross-encoder (flashrank's wheel, for one, downloads
its models at run time), so the model is a cross-encoder of all-MiniLM-L6-v2's geometry
(6 layers, 384 wide, its tokenizer) with seeded random weights: the compute of
ms-marco-MiniLM-L-6-v2, whose scores would mean nothing here. Pairs: a BBC News sentence
as the query, 32 other sentences as its documents. Paths: the Python client (ZeroMQ, one
request per query; and two in flight), `POST /v1/rerank` (the HTTP door), and the same
model exported to ONNX fp32 and int8 and converted to OpenVINO fp32 and int8 (NNCF,
calibrated on pairs) (with each query's Spearman against in-process fp32;
with random weights every pair scores alike, so int8's small noise reorders them: the
figure says nothing of a trained model's). The embedding cache is off.
Target: each >= 0.95x in-process pairs/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import TOKENIZER_FILES, minilm_dir  # noqa: E402


def minilm_sized_cross_encoder(target: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, target / name)
    config = BertConfig.from_pretrained(str(minilm_dir()), num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(target)
    return target


_OWN = threading.local()


def _rerank_own(daemon: object, query: str, documents: list[str]) -> dict:
    """On this thread's own client (a ZeroMQ socket is one thread's)."""
    if not hasattr(_OWN, "client"):
        _OWN.client = daemon.client()  # type: ignore[attr-defined]
    return _OWN.client.rerank(query, documents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--documents", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import httpx
    import numpy as np
    from sentence_transformers import CrossEncoder

    texts = sentences(args.queries * (args.documents + 1))
    work = [(texts[i * (args.documents + 1)], texts[i * (args.documents + 1) + 1 : (i + 1) * (args.documents + 1)]) for i in range(args.queries)]
    pairs = args.queries * args.documents
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-rerank-"))
    model_dir = minilm_sized_cross_encoder(workdir / "ce")
    in_process = CrossEncoder(str(model_dir), device="cpu", local_files_only=True)
    config = write_config(workdir / "config.toml", f"""
[http]
listen = "127.0.0.1:0"
[cache]
max_mb = 0
[models.rr]
active = "v1"
[models.rr.versions.v1]
task = "rerank"
source = "{model_dir}"
device = "cpu"
preload = true
[models.rr.versions.onnx]
task = "rerank"
backend = "onnx"
source = "{model_dir}"
preload = true
[models.rr.versions.onnx-int8]
task = "rerank"
backend = "onnx"
source = "{model_dir}"
quantize = "int8"
min_spearman = -1.0  # random weights: the gate would refuse what a real model passes; the table shows the figure
preload = true
[models.rr.versions.openvino]
task = "rerank"
backend = "openvino"
source = "{model_dir}"
preload = true
[models.rr.versions.openvino-int8]
task = "rerank"
backend = "openvino"
source = "{model_dir}"
precision = "int8"
min_spearman = -1.0
preload = true
""")
    daemon = start_daemon(config, workdir, wait=600)  # four conversions on the first start
    figures: dict[str, list[float]] = {"in-process CrossEncoder.predict": [], "daemon, Client.rerank (ZeroMQ)": [], "daemon, Client.rerank, 2 in flight": [],
                                       "daemon, POST /v1/rerank": [], "daemon, ONNX fp32 (Client)": [], "daemon, ONNX int8 (Client)": [],
                                       "daemon, OpenVINO fp32 (Client)": [], "daemon, OpenVINO int8 (Client)": []}
    onnx_scores: dict[str, list[dict]] = {}
    agreement = 0.0
    try:
        with daemon.client() as client, httpx.Client(timeout=300) as web:
            wait_ready(client)
            url = str(client.status()["http"])
            client.rerank(work[0][0], work[0][1])  # warm
            in_process.predict([(work[0][0], d) for d in work[0][1]])
            for _ in range(args.rounds):
                started = time.perf_counter()
                local = [in_process.predict([(q, d) for d in docs], batch_size=32) for q, docs in work]
                figures["in-process CrossEncoder.predict"].append(pairs / (time.perf_counter() - started))
                started = time.perf_counter()
                served = [client.rerank(q, docs) for q, docs in work]
                figures["daemon, Client.rerank (ZeroMQ)"].append(pairs / (time.perf_counter() - started))
                started = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:  # two clients, so one request's way in and out overlaps the other's model run
                    list(pool.map(lambda item: _rerank_own(daemon, *item), work))
                figures["daemon, Client.rerank, 2 in flight"].append(pairs / (time.perf_counter() - started))
                started = time.perf_counter()
                for q, docs in work:
                    web.post(f"{url}/v1/rerank", json={"model": "rr", "query": q, "documents": docs}).raise_for_status()
                figures["daemon, POST /v1/rerank"].append(pairs / (time.perf_counter() - started))
                for name, spec in (("daemon, ONNX fp32 (Client)", "rr@onnx"), ("daemon, ONNX int8 (Client)", "rr@onnx-int8"),
                                   ("daemon, OpenVINO fp32 (Client)", "rr@openvino"), ("daemon, OpenVINO int8 (Client)", "rr@openvino-int8")):
                    started = time.perf_counter()
                    onnx_scores[spec] = [client.rerank(q, docs, spec) for q, docs in work]
                    figures[name].append(pairs / (time.perf_counter() - started))
            got = np.concatenate([[hit["score"] for hit in sorted(answer["results"], key=lambda h: h["index"])] for answer in served])
            agreement = float(np.max(np.abs(got - np.concatenate(local))))
            spearman = {spec: _spearman_per_query(answers, local) for spec, answers in onnx_scores.items()}
    finally:
        daemon.stop()
    base = float(np.median(figures["in-process CrossEncoder.predict"]))
    print(f"{pairs} pairs a round ({args.queries} queries x {args.documents} documents), median of {args.rounds} interleaved rounds; "
          f"largest score difference daemon vs in-process: {agreement:.2e}")
    print(f"{'path':<36} {'pairs/s':>9} {'vs in-process':>14}")
    for name, values in figures.items():
        median = float(np.median(values))
        print(f"{name:<36} {median:>9.1f} {median / base:>13.2f}x")
    for spec, (low, mean) in spearman.items():
        print(f"{spec}: Spearman of each query's document order against in-process fp32: min {low:.4f}, mean {mean:.4f}")
    print(json.dumps({name: round(float(np.median(values)), 1) for name, values in figures.items()}))


def _spearman_per_query(answers: list[dict], local: list) -> tuple[float, float]:
    import numpy as np

    from hotswapd.backends.cross_encoder_export import spearman

    values = [spearman(np.asarray(expected, dtype=np.float64), np.array([hit["score"] for hit in sorted(answer["results"], key=lambda h: h["index"])]))
              for answer, expected in zip(answers, local, strict=True)]
    return min(values), float(np.mean(values))


if __name__ == "__main__":
    main()
