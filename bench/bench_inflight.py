"""No request dropped by churn (issue 11): 16 clients encode while the daemon is churned every second.

    python bench/bench_inflight.py [--steady 10] [--churn 30] [--clients 16]

One daemon serves a tiny BERT through the ONNX backend (whose close() deletes the
session: a close under a live request fails it), cache off. 16 clients (4 processes x 4
threads) send one text per request. After a steady phase, every second the bench does
the next of:
  evict        `evict` of the model: its active version is retired while requests use it
  live edit    the config's max_wait_ms changes (a serving-only field: applied in place)
  weights edit the config's intra_op_threads changes (a backend option: the weights reload)
  budget       `preload` of both spare versions in turn; memory.max_gb fits the active
               version and one spare, so the second load evicts the first by the budget
               (the budget never evicts a version with requests in flight, by design)
Reported: requests and failures by error code in each phase, p50/p99 latency in the
steady phase and during the churn, and what the daemon did (loads, reloads, evictions).
Target: 0 failed requests over >= 20,000 during the churn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from bench.load import percentile, run_clients  # noqa: E402
from hotswapd import Client  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402


def config_text(models: dict[str, Path], max_wait_ms: float, threads: int) -> str:
    spare = "\n".join(
        f'[models.m.versions.{name}]\nbackend = "onnx"\nsource = "{path}"\nram_gb = 0.1\n'
        for name, path in models.items() if name != "v1"
    )
    return f"""
[daemon]
max_wait_ms = {max_wait_ms}
[cache]
max_mb = 0
[memory]
max_gb = 0.25
[models.m]
active = "v1"
[models.m.versions.v1]
backend = "onnx"
source = "{models['v1']}"
ram_gb = 0.1
preload = true
intra_op_threads = {threads}
{spare}
"""


def churn(endpoint: str, config: Path, models: dict[str, Path], delay: float, stop: threading.Event, log: list[tuple[float, str]]) -> None:
    """After ``delay`` seconds, one churn action a second until ``stop``."""
    if stop.wait(delay):
        return
    log.append((time.time(), "start"))
    step = 0
    with Client(endpoint, timeout=120) as client:
        while not stop.wait(1.0):
            action = ("evict", "live edit", "weights edit", "budget")[step % 4]
            threads = 1 if (step // 4) % 2 == 0 else 2
            try:
                if action == "evict":
                    client.evict("m")
                elif action == "live edit":
                    config.write_text(config_text(models, 4.0 if (step // 4) % 2 == 0 else 2.0, 3 - threads))
                    client.reload_config()
                elif action == "weights edit":
                    config.write_text(config_text(models, 4.0 if (step // 4) % 2 == 0 else 2.0, threads))
                    client.reload_config()
                else:  # the second load must evict the first spare to fit
                    first, second = ("m@s1", "m@s2") if (step // 4) % 2 == 0 else ("m@s2", "m@s1")
                    client.preload(first)
                    client.preload(second)
                log.append((time.time(), action))
            except Exception as exc:  # noqa: BLE001 -- a churn step that fails is reported, not fatal
                log.append((time.time(), f"{action} FAILED: {exc}"))
            step += 1


def summarize(label: str, outcomes: list) -> list[str]:
    codes = Counter(o.code for o in outcomes)
    ok = [o.seconds * 1000 for o in outcomes if o.code == "ok"]
    failed = sum(n for code, n in codes.items() if code != "ok")
    errors = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()) if code != "ok") or "-"
    return [label, str(len(outcomes)), str(failed), errors, f"{percentile(ok, 50):.2f}", f"{percentile(ok, 99):.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steady", type=float, default=10.0)
    parser.add_argument("--churn", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    workdir = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    models = {name: build_tiny_model(workdir / name, seed=seed) for seed, name in enumerate(("v1", "s1", "s2"))}
    config = write_config(workdir / "config.toml", config_text(models, 2.0, 1))
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")})
    actions: list[tuple[float, str]] = []
    try:
        with daemon.client(timeout=300) as client:
            wait_ready(client, 300)
            for spare in ("m@s1", "m@s2"):
                client.preload(spare)  # exported once now, not during the churn
            client.evict("m")
            client.preload("m")
        stop = threading.Event()
        churner = threading.Thread(target=churn, args=(daemon.endpoint, config, models, args.steady + 2.0, stop, actions))
        churner.start()
        outcomes = run_clients(daemon.endpoint, sentences(2000), args.clients, args.steady + args.churn)
        stop.set()
        churner.join()
        with daemon.client() as client:
            audit = Counter(entry["event"] for entry in client.history("m", limit=10_000, all_events=True))
    finally:
        code = daemon.stop()
    churn_start = next((at for at, what in actions if what == "start"), float("inf"))
    steady = [o for o in outcomes if o.ended < churn_start - 1.0]
    churned = [o for o in outcomes if o.ended >= churn_start]
    console = Console()
    table = Table(title=f"{args.clients} clients, one text per request; churn every second from t = {args.steady + 2:.0f} s")
    for column in ("phase", "requests", "failed", "errors by code", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column not in ("phase", "errors by code") else "left")
    table.add_row(*summarize("steady", steady))
    table.add_row(*summarize("churn", churned))
    console.print(table)
    done = Counter(what.split(" FAILED")[0] + (" (failed)" if "FAILED" in what else "") for _, what in actions if what != "start")
    console.print("churn actions: " + ", ".join(f"{what} x{n}" for what, n in sorted(done.items())))
    for _, what in actions:
        if "FAILED" in what:
            console.print(f"  {what}")
    console.print("daemon audit: " + ", ".join(f"{event} {n}" for event, n in sorted(audit.items())))
    ok99 = [o.seconds for o in steady if o.code == "ok"]
    ch99 = [o.seconds for o in churned if o.code == "ok"]
    failed = sum(o.code != "ok" for o in churned)
    console.print(
        f"target: 0 failed over >= 20,000 during the churn: {failed} failed over {len(churned)} "
        f"({'met' if failed == 0 and len(churned) >= 20_000 else 'NOT met'}); "
        f"p99 churn / steady = {percentile(ch99, 99) / percentile(ok99, 99):.2f}; daemon exit {code}"
    )


if __name__ == "__main__":
    main()
