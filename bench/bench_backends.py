"""Backends benchmark (issue 5): one model, four ways, in one run on the same BBC News text.

    python bench/bench_backends.py [--sentences 2000] [--passages 200] [--latency 200] [--rounds 4]

Paths: in-process sentence-transformers (the baseline), and one daemon per backend serving
all-MiniLM-L6-v2: sentence-transformers, ONNX fp32 and ONNX int8 (exported and checked on
first use, into a fresh cache dir; the export time is reported apart from the load time).
Throughput on short sentences (10-20 words) and ~200-token passages, alternating the paths
round by round so a drifting machine hits them alike; single-text latency p50/p99; load
time; resident memory of each daemon process; cosine against the in-process vectors.
Targets on short sentences: ONNX fp32 >= 1.1x and ONNX int8 >= 1.5x the in-process
throughput, with mean cosine >= 0.99 for int8.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_core import load_in_process, percentile  # noqa: E402
from bench.corpus import passages, sentences  # noqa: E402
from hotswapd import Client  # noqa: E402
from tests.daemons import RunningDaemon, start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

BATCH = 32
REQUEST_TEXTS = 256
BACKENDS = {
    "daemon sentence-transformers": 'backend = "sentence-transformers"\ndevice = "cpu"',
    "daemon onnx fp32": 'backend = "onnx"',
    "daemon onnx int8": 'backend = "onnx"\nquantize = "int8"',
}


def start(name: str, options: str, workdir: Path, cache: Path) -> RunningDaemon:
    slug = name.split(" ", 1)[1].replace(" ", "-")
    config = write_config(
        workdir / f"{slug}.toml",
        f'[models.minilm]\nactive = "v1"\n[models.minilm.versions.v1]\nsource = "{minilm_dir()}"\n{options}\nbatch_size = {BATCH}\n',
    )
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(cache)})
    with daemon.client() as client:
        wait_ready(client)
    return daemon


def encode_all(client: Client, texts: list[str]) -> np.ndarray:
    chunks = [texts[i : i + REQUEST_TEXTS] for i in range(0, len(texts), REQUEST_TEXTS)]
    return np.concatenate([result.embeddings for result in client.encode_stream(chunks)])


def measure(model: object, clients: dict[str, Client], short: list[str], long: list[str], latency_texts: list[str], rounds: int) -> dict[str, dict]:
    paths = ["in-process sentence-transformers", *clients]
    figures: dict[str, dict] = {path: {"short_s": 0.0, "long_s": 0.0, "lat": []} for path in paths}

    def run(path: str, texts: list[str]) -> np.ndarray:
        if path in clients:
            return encode_all(clients[path], texts)
        return model.encode(texts, batch_size=BATCH, normalize_embeddings=True)  # type: ignore[attr-defined]

    for path in paths:  # warm-up
        run(path, short[:64])
    for kind, texts in (("short_s", short), ("long_s", long)):
        per_round = max(1, len(texts) // rounds)
        for start_at in range(0, len(texts), per_round):
            part = texts[start_at : start_at + per_round]
            for path in paths:
                t0 = time.perf_counter()
                run(path, part)
                figures[path][kind] += time.perf_counter() - t0
    for text in latency_texts:
        for path in paths:
            t0 = time.perf_counter()
            run(path, [text])
            figures[path]["lat"].append((time.perf_counter() - t0) * 1000)
    sample = short[:500] + long[:100]
    reference = run(paths[0], sample)
    for path in paths:
        got = run(path, sample)
        cos = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        figures[path].update(
            short_per_s=len(short) / figures[path]["short_s"],
            long_per_s=len(long) / figures[path]["long_s"],
            p50_ms=percentile(figures[path]["lat"], 50),
            p99_ms=percentile(figures[path]["lat"], 99),
            cos_mean=float(cos.mean()),
            cos_min=float(cos.min()),
        )
        del figures[path]["lat"]
    return figures


def report(figures: dict[str, dict], args: argparse.Namespace) -> list[tuple[str, float, str, bool]]:
    from rich.console import Console
    from rich.table import Table

    base = figures["in-process sentence-transformers"]
    table = Table(title=f"all-MiniLM-L6-v2 by backend — {args.sentences} BBC sentences, {args.passages} ~200-token passages, batch {BATCH}")
    for column in ("path", "short/s", "×", "passages/s", "×", "p50", "p99", "load", "RSS after run", "cos mean (min)"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for path, f in figures.items():
        table.add_row(
            path,
            f"{f['short_per_s']:.0f}",
            f"{f['short_per_s'] / base['short_per_s']:.2f}",
            f"{f['long_per_s']:.1f}",
            f"{f['long_per_s'] / base['long_per_s']:.2f}",
            f"{f['p50_ms']:.1f} ms",
            f"{f['p99_ms']:.1f} ms",
            f"{f['load_s']:.2f} s" + (f" (+{f['export_s']:.0f} s export)" if f.get("export_s") else ""),
            f"{f['rss_mib']:.0f} MiB",
            f"{f['cos_mean']:.4f} ({f['cos_min']:.4f})",
        )
    Console(width=200).print(table)
    fp32, int8 = figures["daemon onnx fp32"], figures["daemon onnx int8"]
    checks = [
        ("onnx fp32 short/s ÷ in-process", fp32["short_per_s"] / base["short_per_s"], ">= 1.1"),
        ("onnx int8 short/s ÷ in-process", int8["short_per_s"] / base["short_per_s"], ">= 1.5"),
        ("onnx int8 mean cosine", int8["cos_mean"], ">= 0.99"),
    ]
    verdicts = Table(title="targets")
    for column in ("ratio", "value", "target", "met"):
        verdicts.add_column(column)
    out = []
    for name, value, target in checks:
        met = value >= float(target.split()[-1])
        verdicts.add_row(name, f"{value:.3f}", target, "yes" if met else "NO")
        out.append((name, value, target, met))
    Console().print(verdicts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--latency", type=int, default=200, help="single-text requests per path")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    short = sentences(args.sentences)
    long = passages(args.passages)
    latency_texts = sentences(args.sentences + args.latency)[args.sentences :]
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-backends-"))
    rss_before = psutil.Process().memory_info().rss
    model, import_s, load_s = load_in_process()
    in_process_rss = (psutil.Process().memory_info().rss - rss_before) / 2**20
    daemons: dict[str, RunningDaemon] = {}
    clients: dict[str, Client] = {}
    facts: dict[str, dict] = {"in-process sentence-transformers": {"load_s": load_s, "rss_mib": in_process_rss}}
    try:
        for name, options in BACKENDS.items():
            daemon = daemons[name] = start(name, options, workdir, workdir / "cache")
            clients[name] = daemon.client(timeout=600)
            first = clients[name].preload("minilm")
            check = first["details"].get("check", {})
            # Load time as every later start sees it: with the export already cached.
            clients[name].evict("minilm")
            loaded = clients[name].preload("minilm")
            facts[name] = {"load_s": loaded["load_seconds"], "export_s": check.get("seconds") if first["details"].get("exported_now") else None}
        figures = measure(model, clients, short, long, latency_texts, args.rounds)
        for name, daemon in daemons.items():
            facts[name]["rss_mib"] = psutil.Process(daemon.process.pid).memory_info().rss / 2**20
    finally:
        for client in clients.values():
            client.close()
        for daemon in daemons.values():
            daemon.stop()
    for name, extra in facts.items():
        figures[name].update(extra)
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
