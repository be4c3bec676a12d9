"""Corpus benchmark (issue 15): building a version's corpus through the daemon, and
searching it, each against its baseline measured in the same run.

    python bench/bench_search.py [--rows 100000] [--queries 300]

Same model (all-MiniLM-L6-v2, ONNX int8), BBC News sentences (repeated with a suffix
past the corpus's own count), the embedding cache off:
  build     `hs index build` of the rows (jsonl)  vs  `hs encode -f npy` of the same texts
            (target: build >= 0.95x the plain encode's rows/s)
  search    `Client.search` k=10 through the daemon: the server's search time (reply's
            search_ms) and the whole request (encode + search + the socket), p50/p99;
            baseline: a bare numpy matrix-vector product + top-k over the same
            memory-mapped matrix in this process (target: search <= 1.25x it)
  ANN       `hs index ann` (usearch HNSW, f16) of the same corpus: the server's search time
            p50/p99 and recall@10 against the exact results of the same queries
            (targets: p50 <= 1 ms, recall@10 >= 0.95)
  memory    what the daemon counts for the corpus vs the raw matrix size
  compact   `hs index compact` int8 and binary copies: each searched (then the best 100
            rescored with the float rows), p50/p99 and recall@10 against exact float search
            (targets, binary: recall@10 >= 0.95 at <= 1/16 of the float matrix's memory,
            p50 <= the float exact search)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.conftest import HS, daemon_env  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402


def rows_of(count: int) -> list[str]:
    base = sentences(min(count, 16000))  # the corpus has ~16,100 of 10-20 words
    return [text if i < len(base) else f"{text} ({i // len(base)})" for i, text in ((i, base[i % len(base)]) for i in range(count))]


def timed_hs(*args: str, endpoint: str, stdin: Path | None = None, stdout: Path | None = None) -> float:
    env = daemon_env(HOTSWAPD_SOCKET=endpoint, HOTSWAPD_NO_AUTOSTART="1")
    started = time.perf_counter()
    with open(stdin or "/dev/null", "rb") as source, open(stdout or "/dev/null", "wb") as sink:
        done = subprocess.run([str(HS), "--timeout", "600", *args], stdin=source, stdout=sink, stderr=subprocess.PIPE, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hs {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-search-"))
    texts = rows_of(args.rows)
    (workdir / "rows.txt").write_text("\n".join(texts) + "\n")
    (workdir / "rows.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    corpus = workdir / "corpus"
    int8 = f'backend = "onnx"\nsource = "{minilm_dir()}"\nquantize = "int8"\npreload = true\nembeddings_path = "{corpus}"\n'
    config = write_config(workdir / "config.toml", f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "int8"\n[models.minilm.versions.int8]\n{int8}')
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}, wait=900)
    figures: dict[str, float] = {}
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            client.encode(["warm-up"], "minilm")
        # Interleaved: encode, build, encode; the encode baseline is their mean.
        encode_a = timed_hs("encode", "-m", "minilm@int8", "-f", "npy", endpoint=daemon.endpoint, stdin=workdir / "rows.txt", stdout=workdir / "plain.npy")
        build = timed_hs("index", "build", "minilm@int8", "--input", str(workdir / "rows.jsonl"), "--output", str(corpus), endpoint=daemon.endpoint)
        encode_b = timed_hs("encode", "-m", "minilm@int8", "-f", "npy", endpoint=daemon.endpoint, stdin=workdir / "rows.txt", stdout=workdir / "plain2.npy")
        figures["encode rows/s"] = args.rows / ((encode_a + encode_b) / 2)
        figures["build rows/s"] = args.rows / build
        with daemon.client(timeout=900) as client:
            client.evict("minilm")
            queries = [f"{text}?" for text in sentences(16000)[-args.queries :]]  # not rows of the corpus as they are
            client.search(queries[0], "minilm", k=10)  # loads the version and maps the corpus
            server, whole = [], []
            for query in queries:
                started = time.perf_counter()
                answer = client.search(query, "minilm", k=10)
                whole.append((time.perf_counter() - started) * 1000)
                server.append(answer["search_ms"])
            detail = next(item for item in client.models()[0]["version_detail"] if item["version"] == "int8")
            figures["corpus MiB counted"] = detail["corpus"]["memory_mb"]
            vectors = np.stack([client.encode([q], "minilm").embeddings[0] for q in queries[:50]])
            exact_rows = [{hit["row"] for hit in client.search(q, "minilm", k=10, exact=True)["results"][0]} for q in queries]
            # Compact copies (issue 30): scanned first, the best 100 rescored with the float rows.
            for kind in ("int8", "binary"):
                figures[f"{kind} copy write s (hs index compact)"] = timed_hs("index", "compact", str(corpus), "--dtype", kind, endpoint=daemon.endpoint)
            client.search(queries[0], "minilm", k=10)  # the new files are picked up at the next search
            for kind in ("float", "int8", "binary"):
                kind_ms, found = [], 0
                for query, truth in zip(queries, exact_rows, strict=True):
                    answer = client.search(query, "minilm", k=10, precision=kind)
                    kind_ms.append(answer["search_ms"])
                    found += len(truth & {hit["row"] for hit in answer["results"][0]})
                figures[f"{kind} search p50 ms (server)"] = statistics.median(kind_ms)
                figures[f"{kind} search p99 ms (server)"] = percentile(kind_ms, 99)
                figures[f"{kind} recall@10 vs exact float"] = found / (10 * len(queries))
            figures["corpus MiB counted, with the binary copy"] = next(item for item in client.models()[0]["version_detail"] if item["version"] == "int8")["corpus"]["memory_mb"]
            for kind, name in (("float", "embeddings.npy"), ("int8", "embeddings.int8.npy"), ("binary", "embeddings.ubinary.npy")):
                figures[f"{kind} matrix MiB"] = (corpus / name).stat().st_size / 2**20
            (corpus / "embeddings.int8.npy").unlink()  # the ANN phase next measures the index alone
            (corpus / "embeddings.ubinary.npy").unlink()
            figures["ann build s (hs index ann)"] = timed_hs("index", "ann", str(corpus), endpoint=daemon.endpoint)
            client.evict("minilm")
            client.search(queries[0], "minilm", k=10)
            ann_ms, found = [], 0
            for query, truth in zip(queries, exact_rows, strict=True):
                answer = client.search(query, "minilm", k=10)
                ann_ms.append(answer["search_ms"])
                found += len(truth & {hit["row"] for hit in answer["results"][0]})
            figures["ann search p50 ms (server)"] = statistics.median(ann_ms)
            figures["ann search p99 ms (server)"] = percentile(ann_ms, 99)
            figures["ann recall@10 vs exact (these queries)"] = found / (10 * len(queries))
            figures["ann MiB on disk"] = (corpus / "ann.usearch").stat().st_size / 2**20
        matrix = np.load(corpus / "embeddings.npy", mmap_mode="r")
        figures["raw matrix MiB"] = matrix.nbytes / 2**20
        bare = []
        for _ in range(len(queries) // len(vectors) + 1):
            for q in vectors:
                started = time.perf_counter()
                scores = matrix @ q
                top = np.argpartition(scores, -10)[-10:]
                top[np.argsort(-scores[top])]
                bare.append((time.perf_counter() - started) * 1000)
        figures.update({
            "search p50 ms (server)": statistics.median(server), "search p99 ms (server)": percentile(server, 99),
            "request p50 ms (encode+search)": statistics.median(whole), "request p99 ms": percentile(whole, 99),
            "numpy p50 ms": statistics.median(bare), "numpy p99 ms": percentile(bare, 99),
        })
    finally:
        daemon.stop()
    width = max(len(name) for name in figures)
    print(f"\n{args.rows:,} rows x 384, MiniLM ONNX int8")
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.2f}")
    print(f"\nbuild / plain encode: {figures['build rows/s'] / figures['encode rows/s']:.2f}x (target >= 0.95x)")
    print(f"search p50 (server) / numpy p50: {figures['search p50 ms (server)'] / figures['numpy p50 ms']:.2f}x (target <= 1.25x)")
    print(f"ANN p50 {figures['ann search p50 ms (server)']:.3f} ms (target <= 1 ms) at recall@10 {figures['ann recall@10 vs exact (these queries)']:.3f} (target >= 0.95)")
    print(f"binary + rescoring: recall@10 {figures['binary recall@10 vs exact float']:.3f} (target >= 0.95) at "
          f"{figures['binary matrix MiB'] / figures['float matrix MiB']:.3f} of the float matrix's memory (target <= 1/16 = 0.0625), "
          f"p50 {figures['binary search p50 ms (server)']:.2f} ms vs float {figures['float search p50 ms (server)']:.2f} ms (target: <=)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
