"""Core benchmark (issue 3): the daemon against in-process sentence-transformers, and `hs` start-up.

    python bench/bench_core.py [--sentences 5000] [--latency-requests 300] [--runs 20]

Everything is measured in one run on one machine, and compared as ratios:
  throughput  daemon (client, 256-text requests, 4 in flight) / in-process model.encode,
              alternating round by round
  latency     single-text p50/p99 through the client vs in-process model.encode([text])
  start-up    `hs encode "x" -f json` (warm daemon) vs `python -c "import typer, zmq"`
Targets: throughput ratio >= 0.95; hs encode <= 1.5x the typer+zmq import.
"""

from __future__ import annotations

import argparse
import json
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
from hotswapd import Client  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

BATCH = 32


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def load_in_process() -> tuple[object, float, float]:
    started = time.perf_counter()
    from sentence_transformers import SentenceTransformer

    imported = time.perf_counter()
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    return model, imported - started, time.perf_counter() - imported


def interleaved(model: object, endpoint: str, texts: list[str], latency_texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Both paths, alternating round by round over the same texts, so that the drift of a
    shared machine hits them alike (in-process and daemon are never busy at once)."""
    seconds = {"in_process": 0.0, "daemon": 0.0}
    latencies: dict[str, list[float]] = {"in_process": [], "daemon": []}
    per_round = max(1, len(texts) // rounds)
    with Client(endpoint, timeout=600) as client:
        model.encode(texts[:64], batch_size=BATCH)  # type: ignore[attr-defined]
        client.encode(texts[:64])
        for start in range(0, len(texts), per_round):
            part = texts[start : start + per_round]
            t0 = time.perf_counter()
            model.encode(part, batch_size=BATCH, normalize_embeddings=True)  # type: ignore[attr-defined]
            seconds["in_process"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in client.encode_stream([part[i : i + 256] for i in range(0, len(part), 256)]):
                pass
            seconds["daemon"] += time.perf_counter() - t0
        for text in latency_texts:
            t = time.perf_counter()
            model.encode([text], normalize_embeddings=True)  # type: ignore[attr-defined]
            latencies["in_process"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            client.encode([text])
            latencies["daemon"].append((time.perf_counter() - t) * 1000)
    return {
        path: {
            "sent_per_s": len(texts) / seconds[path],
            "p50_ms": percentile(latencies[path], 50),
            "p99_ms": percentile(latencies[path], 99),
        }
        for path in seconds
    }


def wall_ms(command: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def startup(endpoint: str, runs: int) -> dict[str, float]:
    env = {**os.environ, "HOTSWAPD_SOCKET": endpoint, "HOTSWAPD_NO_AUTOSTART": "1"}
    hs = str(Path(sys.executable).with_name("hs"))
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import typer, zmq'": [py, "-c", "import typer, zmq"],
        "hs --help": [hs, "--help"],
        "hs encode 'x' -f json": [hs, "encode", "x", "-f", "json"],
    }
    # Interleave the commands round by round so drift on a shared machine hits them alike.
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            samples[name].append(wall_ms(command, 1, env))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ip, dm, st = results["in_process"], results["daemon"], results["startup"]
    ratio = dm["sent_per_s"] / ip["sent_per_s"]
    table = Table(title=f"hotswap core benchmark — {results['sentences']} BBC News sentences, batch {BATCH}")
    for column in ("path", "sent/s", "one text p50", "one text p99", "import + load"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("in-process sentence-transformers", f"{ip['sent_per_s']:.1f}", f"{ip['p50_ms']:.2f} ms",
                  f"{ip['p99_ms']:.2f} ms", f"{ip['import_s']:.1f} s + {ip['load_s']:.2f} s")
    table.add_row("hotswapd via Client", f"{dm['sent_per_s']:.1f}", f"{dm['p50_ms']:.2f} ms", f"{dm['p99_ms']:.2f} ms", "(warm)")
    Console().print(table)

    startup_table = Table(title="process wall time (median)")
    startup_table.add_column("command")
    startup_table.add_column("ms", justify="right")
    for name, value in st.items():
        startup_table.add_row(name, f"{value:.1f}")
    Console().print(startup_table)

    hs_ratio = st["hs encode 'x' -f json"] / st["python -c 'import typer, zmq'"]
    checks = [
        ("daemon throughput / in-process", ratio, ">= 0.95", ratio >= 0.95),
        ("hs encode wall / import typer,zmq", hs_ratio, "<= 1.5", hs_ratio <= 1.5),
        ("client p50 - in-process p50 (ms)", dm["p50_ms"] - ip["p50_ms"], "(info)", True),
    ]
    verdicts = Table(title="targets")
    for column in ("ratio", "value", "target", "met"):
        verdicts.add_column(column)
    for name, value, target, met in checks:
        verdicts.add_row(name, f"{value:.3f}", target, "yes" if met else "NO")
    Console().print(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20, help="process start-up samples per command")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two throughput paths")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    # An install byte-compiles the package; a source checkout run with PYTHONDONTWRITEBYTECODE
    # would otherwise recompile every module on every `hs` start and measure that instead.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "hotswapd"), str(HERE.parent / "hotswap_cli")], check=True)
    texts = sentences(args.sentences)
    latency_texts = sentences(args.latency_requests + args.sentences)[args.sentences :]
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-"))
    config = write_config(
        workdir / "config.toml",
        f'[models.minilm]\nactive = "v1"\n[models.minilm.versions.v1]\nsource = "{minilm_dir()}"\n'
        f"device = \"cpu\"\npreload = true\nbatch_size = {BATCH}\n",
    )
    model, import_s, load_s = load_in_process()
    daemon = start_daemon(config, workdir)
    try:
        with daemon.client() as client:
            wait_ready(client)
        results: dict = {"sentences": len(texts), **interleaved(model, daemon.endpoint, texts, latency_texts, args.rounds)}
        results["in_process"].update(import_s=import_s, load_s=load_s)
        results["startup"] = startup(daemon.endpoint, args.runs)
    finally:
        daemon.stop()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
