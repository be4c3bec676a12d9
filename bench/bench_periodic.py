"""Live latency with and without periodic benchmark rounds (issue 18, item 1).

    python bench/bench_periodic.py [--phase-seconds 40] [--rate 20] [--phases 6]

One real daemon serves all-MiniLM-L6-v2 twice: v1 (sentence-transformers fp32, active) and
v2 (ONNX int8, loaded: a candidate), cache off. A client sends one BBC sentence per request
at random intervals (Poisson, --rate per second) and times each answer. Phases alternate
(off, on, on, off, off, on, ...) by editing the config and `hs config reload`: in "on"
phases `[bench] every_seconds = 1` keeps a round always in progress (the worst case), with
the default idle_ms and max_share. The target: live p99 rises by at most 5 %.
"""

from __future__ import annotations

import argparse
import json
import random
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

ORDER = ["off", "on", "on", "off", "off", "on", "on", "off"]  # each condition early and late: the machine drifts


def config_text(model_dir: Path, periodic: bool) -> str:
    bench = "[bench]\nevery_seconds = 1\n" if periodic else ""
    return (
        f"{bench}[cache]\nmax_mb = 0\n[models.minilm]\nactive = \"v1\"\n"
        f'[models.minilm.versions.v1]\nsource = "{model_dir}"\npreload = true\n'
        f'[models.minilm.versions.v2]\nbackend = "onnx"\nquantize = "int8"\nsource = "{model_dir}"\npreload = true\n'
    )


def live_phase(client: object, texts: list[str], seconds: float, rate: float, rng: random.Random) -> list[float]:
    latencies = []
    until = time.monotonic() + seconds
    i = 0
    while time.monotonic() < until:
        time.sleep(rng.expovariate(rate))
        text = f"{texts[i % len(texts)]} #{i}"
        started = time.perf_counter()
        client.encode([text], "minilm")  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=90)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--phases", type=int, default=6)
    args = parser.parse_args()
    texts = sentences(2000)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-periodic-"))
    model_dir = minilm_dir()
    config = write_config(work / "config.toml", config_text(model_dir, False))
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(work / "cache")}, wait=600)
    history = work / "state" / "hotswapd" / "bench.jsonl"
    rng = random.Random(7)
    samples: dict[str, list[float]] = {"off": [], "on": []}
    per_phase = []
    try:
        with daemon.client(timeout=600) as client:
            wait_ready(client, wait=600)
            for text in texts[:200]:  # warm both versions and the allocator
                client.encode([text], "minilm@v1")
                client.encode([text], "minilm@v2")
            for phase in ORDER[: args.phases]:
                write_config(config, config_text(model_dir, phase == "on"))
                client.reload_config()
                rows_before = len(history.read_text().splitlines()) if history.exists() else 0
                latencies = live_phase(client, texts, args.phase_seconds, args.rate, rng)
                rows_after = len(history.read_text().splitlines()) if history.exists() else 0
                samples[phase].extend(latencies)
                per_phase.append((phase, len(latencies), statistics.median(latencies), pct(latencies, 99), rows_after - rows_before))
                print(f"{phase:>3}: {len(latencies)} requests, p50 {per_phase[-1][2]:.2f} ms, p99 {per_phase[-1][3]:.2f} ms, rows written {rows_after - rows_before}", flush=True)
    finally:
        daemon.stop()
    rows = [json.loads(line) for line in history.read_text().splitlines()] if history.exists() else []
    print(f"\nlive latency, {args.rate:g} requests/s (Poisson), one text each, minilm@v1 torch fp32; {len(ORDER[: args.phases])} phases of {args.phase_seconds:g} s")
    print("| periodic rounds | requests | p50 ms | p90 ms | p99 ms | p99 vs off |")
    print("|---|---|---|---|---|---|")
    base = pct(samples["off"], 99)
    for phase in ("off", "on"):
        values = samples[phase]
        print(f"| {phase} | {len(values)} | {statistics.median(values):.2f} | {pct(values, 90):.2f} | {pct(values, 99):.2f} | {pct(values, 99) / base:.3f}x |")
    rounds = {row["round"] for row in rows if row.get("periodic")}
    print(f"\nrounds finished in 'on' phases: {len(rounds)} ({len(rows)} rows); last round:")
    last = [row for row in rows if rows and row.get("round") == rows[-1].get("round")]
    for row in last:
        print(f"  {row['version']}: {row['texts_per_s']:.1f} texts/s, single p50 {row['p50_ms']:.2f} ms, agreement {row['agreement']}, recommended {row['recommended']}")


if __name__ == "__main__":
    main()
