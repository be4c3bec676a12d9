"""Client load for the daemon benchmarks: many clients, in a few processes, each sending
one text per request and recording (end time, latency, outcome) for every request."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass

from hotswapd import Client
from hotswapd.errors import HotswapError


@dataclass(frozen=True)
class Outcome:
    ended: float  # time.time() when the answer came
    seconds: float
    code: str  # "ok" or the error's wire code


def _client_thread(endpoint: str, texts: list[str], until: float, timeout: float, out: list[Outcome]) -> None:
    with Client(endpoint, timeout=timeout) as client:
        i = 0
        while time.time() < until:
            text = f"{texts[i % len(texts)]} #{i}"  # unique: the cache never answers
            started = time.perf_counter()
            try:
                client.encode([text])
                code = "ok"
            except HotswapError as exc:
                code = exc.code
                if code in {"daemon_timeout", "daemon_died"}:
                    client.close()
            out.append(Outcome(time.time(), time.perf_counter() - started, code))
            i += 1


def _process(endpoint: str, texts: list[str], threads: int, until: float, timeout: float, queue: multiprocessing.Queue) -> None:
    results: list[Outcome] = []
    workers = [threading.Thread(target=_client_thread, args=(endpoint, texts[n::threads] or texts, until, timeout, results)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put([(o.ended, o.seconds, o.code) for o in results])


def run_clients(endpoint: str, texts: list[str], clients: int, seconds: float, *, processes: int = 4, timeout: float = 60.0) -> list[Outcome]:
    """``clients`` clients for ``seconds``, spread over ``processes`` processes."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    until = time.time() + seconds
    per = [clients // processes + (1 if n < clients % processes else 0) for n in range(processes)]
    procs = [context.Process(target=_process, args=(endpoint, texts, count, until, timeout, queue)) for count in per if count]
    for proc in procs:
        proc.start()
    outcomes = [Outcome(*row) for _ in procs for row in queue.get()]
    for proc in procs:
        proc.join()
    return outcomes


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]
