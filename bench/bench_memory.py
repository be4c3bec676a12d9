"""Memory benchmark (issue 6): RSS while cycling through versions under a budget that fits two of three.

    python bench/bench_memory.py [--budget-gb 0.45] [--rounds 15]

One daemon serves all-MiniLM-L6-v2 three ways (sentence-transformers, ONNX fp32, ONNX
int8) with `memory.max_gb` set so that only two fit at once. A warm-up round loads each
(importing torch, onnxruntime, ...), then everything is evicted and the daemon's RSS is
taken as the baseline: the libraries, no models. Then requests cycle through the versions
while a thread samples the daemon's RSS every 20 ms, and `status` reports what the budget
accounts. The budget holds if the accounted memory never exceeds it and the RSS above the
baseline stays within it too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

VERSIONS = {
    "st": 'backend = "sentence-transformers"\ndevice = "cpu"',
    "fp32": 'backend = "onnx"',
    "int8": 'backend = "onnx"\nquantize = "int8"',
}
MiB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-gb", type=float, default=0.45)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-memory-"))
    blocks = "".join(f"[models.minilm.versions.{name}]\nsource = \"{minilm_dir()}\"\n{options}\n" for name, options in VERSIONS.items())
    config = write_config(workdir / "config.toml", f'[memory]\nmax_gb = {args.budget_gb}\n[cache]\nmax_mb = 0\n[models.minilm]\nactive = "st"\n{blocks}')
    texts = sentences(64 * len(VERSIONS) * (args.rounds + 1))
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}, wait=600)
    process = psutil.Process(daemon.process.pid)
    samples: list[int] = []
    accounted: list[int] = []
    stop = threading.Event()
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client)
            sizes = {}
            for name in VERSIONS:  # warm-up: exports, library imports, a measured size each
                sizes[name] = client.preload(f"minilm@{name}")["memory_bytes"]
                client.encode(texts[:64], f"minilm@{name}")
            client.evict("minilm")
            time.sleep(1.0)
            baseline = process.memory_info().rss

            def sample() -> None:
                while not stop.is_set():
                    samples.append(process.memory_info().rss)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            position = 64
            for _ in range(args.rounds):
                for name in VERSIONS:
                    client.encode(texts[position : position + 64], f"minilm@{name}")
                    position += 64
                    accounted.append(client.status()["models_memory_bytes"])
            stop.set()
            sampler.join()
            evictions = sum(1 for entry in client.history(all_events=True, limit=10_000) if entry.get("event") == "memory")
    finally:
        daemon.stop()
    report(args, sizes, baseline, samples, accounted, evictions)


def report(args: argparse.Namespace, sizes: dict[str, int], baseline: int, samples: list[int], accounted: list[int], evictions: int) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = args.budget_gb * 1024**3
    peak_rss = max(samples)
    table = Table(title=f"cycling st -> fp32 -> int8 for {args.rounds} rounds under memory.max_gb = {args.budget_gb}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, size in sizes.items():
        table.add_row(f"measured size of {name}", f"{size / MiB:.0f} MiB")
    table.add_row("evictions by the budget", str(evictions))
    table.add_row("baseline RSS (libraries, no model)", f"{baseline / MiB:.0f} MiB")
    table.add_row("peak RSS", f"{peak_rss / MiB:.0f} MiB")
    table.add_row("peak RSS above baseline", f"{(peak_rss - baseline) / MiB:.0f} MiB")
    table.add_row("peak memory the budget accounts", f"{max(accounted) / MiB:.0f} MiB")
    table.add_row("budget", f"{budget / MiB:.0f} MiB")
    Console().print(table)
    checks = Table(title="targets")
    for column in ("check", "met"):
        checks.add_column(column)
    checks.add_row("accounted memory <= budget", "yes" if max(accounted) <= budget else "NO")
    checks.add_row("peak RSS above baseline <= budget", "yes" if peak_rss - baseline <= budget else "NO")
    Console().print(checks)


if __name__ == "__main__":
    main()
