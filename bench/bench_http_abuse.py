"""Abandoned HTTP requests against a ZeroMQ client's latency (issue 27, point 2).

    python bench/bench_http_abuse.py [--seconds 20] [--megabytes 15]

One daemon serving all-MiniLM-L6-v2 (sentence-transformers, cache off), HTTP on. Two
phases of ``--seconds`` each, in one run:

  baseline   a ZeroMQ client encodes single BBC sentences back to back, each with a 5 s
             deadline (``hs encode --timeout 5``);
  abandoned  the same, while every second another client POSTs a ``--megabytes`` MB
             /v1/embeddings request (4096 long passages) and disconnects a second later
             without reading the answer.

Reported per phase: requests answered, refused (busy or deadline), p50 and p99 latency,
and the daemon's own count of withdrawn requests. Before the fix a disconnect cancelled
nothing: each abandoned request kept the inference thread for ~25 s, and the ZeroMQ client
was refused as busy for most of the phase.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import passages, sentences  # noqa: E402
from hotswapd.errors import Busy, DaemonTimeout, DeadlineExceeded  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

TEXTS_PER_ABANDONED = 4096  # daemon.max_batch_texts: the largest request one may send


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def abandoned_body(megabytes: float) -> bytes:
    size = int(megabytes * 2**20 / TEXTS_PER_ABANDONED)
    texts = [(text * (size // len(text) + 1))[:size] for text in passages(64)]
    return json.dumps({"model": "minilm", "input": [texts[i % len(texts)] for i in range(TEXTS_PER_ABANDONED)]}).encode()


def abandon(host: str, port: int, body: bytes, stop: threading.Event, sent: list[int]) -> None:
    """Every second: a big POST, its connection closed a second later, its answer never
    read (only peeked at: a 429 means the daemon refused it at once, with the queue full)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            conn = socket.create_connection((host, port))
            conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            sent[0] += 1
            stop.wait(1.0)
            conn.setblocking(False)
            try:
                if conn.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 429"):
                    sent[1] += 1
            except BlockingIOError:
                pass  # no answer yet: it is being worked on, and is now abandoned
            conn.close()
        except OSError as exc:
            print(f"abandoning client: {exc}", file=sys.stderr)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def singles(endpoint: str, texts: list[str], seconds: float) -> tuple[list[float], dict[str, int]]:
    from hotswapd import Client

    latencies: list[float] = []
    refused = {"busy": 0, "deadline": 0, "timeout": 0}
    deadline = time.monotonic() + seconds
    with Client(endpoint, timeout=5.0) as client:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                client.encode([texts[i % len(texts)]], "minilm", timeout=5.0)
                latencies.append(time.perf_counter() - started)
            except Busy:
                refused["busy"] += 1
                time.sleep(0.05)
            except DeadlineExceeded:
                refused["deadline"] += 1
            except DaemonTimeout:
                refused["timeout"] += 1
            i += 1
    return latencies, refused


def withdrawn(client: object) -> int:
    text = client.metrics()  # type: ignore[attr-defined]
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("hotswapd_requests_total") and 'outcome="cancelled"' in line))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--megabytes", type=float, default=15.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-abuse-"))
    config = write_config(workdir / "config.toml", (
        '[cache]\nmax_mb = 0\n[http]\nlisten = "127.0.0.1:0"\n[models.minilm]\nactive = "st"\n'
        f'[models.minilm.versions.st]\nbackend = "sentence-transformers"\nsource = "{minilm_dir()}"\ndevice = "cpu"\npreload = true\n'
    ))
    body = abandoned_body(args.megabytes)
    texts = sentences(2000)
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}, wait=600)
    rows = []
    try:
        with daemon.client(timeout=600) as client:
            status = wait_ready(client, wait=600)
            host, port = str(status["http"]).removeprefix("http://").rsplit(":", 1)
            client.encode(texts[:64], "minilm")  # warm
            for phase in ("baseline", "abandoned"):
                stop, sent = threading.Event(), [0, 0]
                abuser = threading.Thread(target=abandon, args=(host, int(port), body, stop, sent)) if phase == "abandoned" else None
                before = withdrawn(client)
                if abuser is not None:
                    abuser.start()
                latencies, refused = singles(daemon.endpoint, texts, args.seconds)
                stop.set()
                if abuser is not None:
                    abuser.join()
                settle = time.monotonic() + 60
                while client.status()["queue"]["queued_texts"] and time.monotonic() < settle:
                    time.sleep(0.2)
                rows.append((phase, sent, latencies, refused, withdrawn(client) - before))
    finally:
        daemon.stop()
    print(f"\nCPU: {cpu_model()}; {args.seconds:g} s per phase; abandoned requests: {len(body) / 2**20:.1f} MB, {TEXTS_PER_ABANDONED} texts, closed after 1 s")
    print("abandoned: sent / refused 429 at once; withdrawn: the daemon's count of requests dropped when their client left")
    print(f"{'phase':<10} {'abandoned':>9} {'answered':>8} {'busy':>5} {'deadl.':>6} {'tmout':>5} {'p50 ms':>7} {'p99 ms':>7} {'withdrawn':>9}")
    for phase, (abandoned, refused_429), latencies, refused, cancelled in rows:
        p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
        p99 = statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) >= 100 else float("nan")
        print(f"{phase:<10} {f'{abandoned}/{refused_429}':>9} {len(latencies):>8} {refused['busy']:>5} {refused['deadline']:>6} {refused['timeout']:>5} {p50:>7.1f} {p99:>7.1f} {cancelled:>9}")
    base, abuse = rows[0][2], rows[1][2]
    if len(base) >= 100 and len(abuse) >= 100:
        ratio = statistics.quantiles(abuse, n=100)[98] / statistics.quantiles(base, n=100)[98]
        print(f"\np99 with abandoned requests / baseline: {ratio:.2f}x; refusals: {sum(rows[1][3].values())} (baseline {sum(rows[0][3].values())})")


if __name__ == "__main__":
    main()
