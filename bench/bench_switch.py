"""Switching benchmark (issue 4): client latency in steady state and while versions switch.

    python bench/bench_switch.py [--requests 400] [--rounds 3] [--switch-every 0.05]

One daemon serves all-MiniLM-L6-v2 as two versions (v1 and v2, like a re-deploy of the
same model). One client sends single-text requests back to back; in the "immediate" phase
another client flips the active version every --switch-every seconds, in the "canary"
phase it starts and aborts a 10 % canary at the same rate. Phases are interleaved round by
round so machine drift hits them alike. Target: p99 while switching <= 1.05x steady p99.
"""

from __future__ import annotations

import argparse
import multiprocessing
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

PHASES = ("steady", "immediate", "canary")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def switcher(endpoint: str, phase: str, stop: multiprocessing.synchronize.Event, every: float, counter: multiprocessing.sharedctypes.Synchronized) -> None:  # type: ignore[name-defined]
    """Runs in its own process, as `hs switch` would: it must not share the measuring
    client's GIL, or the benchmark measures its own thread switching."""
    with Client(endpoint, timeout=60) as client:
        flip = 0
        while not stop.wait(every):
            if phase == "immediate":
                client.switch("m", "v2" if flip % 2 == 0 else "v1")
            else:
                if flip % 2 == 0:
                    client.switch("m", "v2", "canary", share=10)
                else:
                    client.abort_rollout("m")
            flip += 1
        if phase == "canary" and flip % 2 == 1:
            client.abort_rollout("m")
        client.switch("m", "v1")
        counter.value += flip


def run_phase(endpoint: str, phase: str, texts: list[str], every: float, counter: multiprocessing.sharedctypes.Synchronized) -> list[float]:  # type: ignore[name-defined]
    stop = multiprocessing.Event()
    process = multiprocessing.Process(target=switcher, args=(endpoint, phase, stop, every, counter)) if phase != "steady" else None
    if process:
        process.start()
        time.sleep(0.2)  # let it connect before the clock starts
    latencies = []
    with Client(endpoint, timeout=60) as client:
        for text in texts:
            t = time.perf_counter()
            client.encode([text], "m")
            latencies.append((time.perf_counter() - t) * 1000)
    stop.set()
    if process:
        process.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per phase per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switch-every", type=float, default=0.05)
    args = parser.parse_args()

    texts = sentences(args.requests)
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-switch-"))
    source = minilm_dir()
    config = write_config(
        workdir / "config.toml",
        f'[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "{source}"\ndevice = "cpu"\npreload = true\n'
        f'[models.m.versions.v2]\nsource = "{source}"\ndevice = "cpu"\npreload = true\n',
    )
    daemon = start_daemon(config, workdir, extra_env={"XDG_STATE_HOME": str(workdir / "state")})
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    switches = {phase: multiprocessing.Value("i", 0) for phase in PHASES}
    try:
        with daemon.client() as client:
            wait_ready(client)
            client.encode(["warm"], "m@v2")  # both versions loaded and warm before measuring
            client.switch("m", "v2")
            client.switch("m", "v1")
            for text in texts[:50]:
                client.encode([text], "m")
        for _ in range(args.rounds):
            for phase in PHASES:
                samples[phase] += run_phase(daemon.endpoint, phase, texts, args.switch_every, switches[phase])
    finally:
        daemon.stop()
    report(samples, switches)


def report(samples: dict[str, list[float]], switches: dict[str, multiprocessing.sharedctypes.Synchronized]) -> None:  # type: ignore[name-defined]
    from rich.console import Console
    from rich.table import Table

    steady_p99 = percentile(samples["steady"], 99)
    table = Table(title="client latency, single texts, all-MiniLM-L6-v2 (ms)")
    for column in ("phase", "requests", "switches", "p50", "p95", "p99", "max", "p99 / steady p99"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in PHASES:
        values = samples[phase]
        ratio = percentile(values, 99) / steady_p99
        table.add_row(phase, str(len(values)), str(switches[phase].value), f"{percentile(values, 50):.2f}", f"{percentile(values, 95):.2f}",
                      f"{percentile(values, 99):.2f}", f"{max(values):.2f}", f"{ratio:.3f}" + ("" if phase == "steady" else (" ok" if ratio <= 1.05 else " OVER 1.05")))
    Console().print(table)


if __name__ == "__main__":
    import multiprocessing.sharedctypes  # noqa: F401 - for the annotations above
    import multiprocessing.synchronize  # noqa: F401

    main()
