"""Throughput benchmark (issue 6): many small clients, and Infinity, in one process tree.

    python bench/bench_throughput.py [--seconds 20] [--clients 16] [--no-infinity]

Paths, all on all-MiniLM-L6-v2 and BBC News sentences (10-20 words), each client sending
single texts (unique per request, so the embedding cache plays no part):
  in-process sentence-transformers   one caller, model.encode([text]) (latency); and its
                                     batch throughput (model.encode of 32 at a time)
  daemon, 1 client / 16 clients      the best backend (ONNX int8), clients as separate
                                     processes, with dynamic batching
  daemon, 16 clients, no batching    the same version with max_batch_size = 1, max_wait_ms = 0
  the same two for the sentence-transformers backend (whose per-call overhead batching removes)
  Infinity (infinity-emb)            its Python engine (torch), 16 concurrent callers, in its
                                     own venv (bench/.infinity-venv, created on first run)
Targets: 16 clients batched >= 3x the same clients unbatched; daemon with 16 clients
>= 1.3x Infinity's throughput; single-text p50 through the client <= in-process + 1 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_core import load_in_process  # noqa: E402
from bench.corpus import sentences  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

INFINITY_VENV = HERE / ".infinity-venv"
INFINITY_REQUIREMENT = "infinity-emb[torch]==0.0.78"


def client_worker(endpoint: str, spec: str, texts: list[str], seconds: float, tag: str, out: multiprocessing.Queue) -> None:
    from hotswapd import Client

    done, latencies = 0, []
    with Client(endpoint, timeout=120) as client:
        client.encode([f"warm-up {tag}"], spec)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            client.encode([f"{texts[done % len(texts)]} [{tag}-{done}]"], spec)
            latencies.append((time.perf_counter() - t0) * 1000)
            done += 1
    out.put((done, statistics.median(latencies)))


def crowd(endpoint: str, spec: str, texts: list[str], clients: int, seconds: float, tag: str) -> dict[str, float]:
    """``clients`` processes sending single texts for ``seconds``: texts/s and median latency."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=client_worker, args=(endpoint, spec, texts[i::clients], seconds, f"{tag}{i}", out)) for i in range(clients)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=seconds + 300) for _ in workers]
    for worker in workers:
        worker.join()
    return {"texts_per_s": sum(done for done, _ in results) / seconds, "p50_ms": statistics.median(p50 for _, p50 in results)}


def in_process(texts: list[str]) -> dict[str, float]:
    model, _, load_s = load_in_process()
    model.encode(texts[:64])
    latencies = []
    for text in texts[:300]:
        t0 = time.perf_counter()
        model.encode([text], normalize_embeddings=True)
        latencies.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    model.encode(texts[:2000], batch_size=32, normalize_embeddings=True)
    return {"texts_per_s": 2000 / (time.perf_counter() - t0), "p50_ms": statistics.median(latencies), "load_s": load_s}


def infinity(texts: list[str], clients: int, seconds: float) -> dict[str, float] | str:
    """Infinity's figures, or the reason it could not run here."""
    python = INFINITY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
        constraints = HERE.parent / "constraints.txt"  # the CPU build of torch on this machine
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), INFINITY_REQUIREMENT], capture_output=True, text=True)
        if done.returncode != 0:
            return "pip could not install infinity-emb: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    done = subprocess.run(
        [str(python), str(HERE / "infinity_worker.py"), str(minilm_dir()), handle.name, str(clients), str(seconds)],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        return "infinity-emb failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="per throughput phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--no-infinity", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    texts = sentences(4000)
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-throughput-"))
    int8 = f'backend = "onnx"\nsource = "{minilm_dir()}"\nquantize = "int8"\npreload = true\n'
    torch = f'backend = "sentence-transformers"\nsource = "{minilm_dir()}"\ndevice = "cpu"\npreload = true\n'
    off = "max_batch_size = 1\nmax_wait_ms = 0\n"
    config = write_config(
        workdir / "config.toml",
        f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "batched"\n[models.minilm.versions.batched]\n{int8}'
        f"[models.minilm.versions.unbatched]\n{int8}{off}[models.minilm.versions.st]\n{torch}"
        f"[models.minilm.versions.st_unbatched]\n{torch}{off}",
    )
    figures: dict[str, dict[str, float] | str] = {"in-process sentence-transformers": in_process(texts)}
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}, wait=600)
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
        endpoint = daemon.endpoint
        figures["daemon onnx int8, 1 client"] = crowd(endpoint, "minilm@batched", texts, 1, args.seconds, "one")
        figures[f"daemon onnx int8, {args.clients} clients, no batching"] = crowd(endpoint, "minilm@unbatched", texts, args.clients, args.seconds, "off")
        figures[f"daemon onnx int8, {args.clients} clients"] = crowd(endpoint, "minilm@batched", texts, args.clients, args.seconds, "on")
        figures[f"daemon sentence-transformers, {args.clients} clients, no batching"] = crowd(endpoint, "minilm@st_unbatched", texts, args.clients, args.seconds, "stoff")
        figures[f"daemon sentence-transformers, {args.clients} clients"] = crowd(endpoint, "minilm@st", texts, args.clients, args.seconds, "ston")
    finally:
        daemon.stop()
    if not args.no_infinity:
        figures[f"Infinity (torch), {args.clients} callers"] = infinity(texts, args.clients, args.seconds)
    report(figures, args.clients)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def report(figures: dict[str, dict[str, float] | str], clients: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"single-text clients on all-MiniLM-L6-v2 (BBC sentences), {clients} concurrent where stated")
    for column in ("path", "texts/s", "p50 per request"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for path, value in figures.items():
        if isinstance(value, str):
            table.add_row(path, value, "")
        else:
            table.add_row(path, f"{value['texts_per_s']:.1f}", f"{value['p50_ms']:.1f} ms")
    Console(width=160).print(table)
    base = figures["in-process sentence-transformers"]
    on = figures[f"daemon onnx int8, {clients} clients"]
    off = figures[f"daemon onnx int8, {clients} clients, no batching"]
    one = figures["daemon onnx int8, 1 client"]
    inf = figures.get(f"Infinity (torch), {clients} callers")
    st_on = figures[f"daemon sentence-transformers, {clients} clients"]
    st_off = figures[f"daemon sentence-transformers, {clients} clients, no batching"]
    checks = [
        ("batched / unbatched, 16 clients, sentence-transformers", st_on["texts_per_s"] / st_off["texts_per_s"], 3.0, True),  # type: ignore[index]
        ("batched / unbatched, 16 clients, onnx int8 (info)", on["texts_per_s"] / off["texts_per_s"], 1.0, True),  # type: ignore[index]
        ("client p50 - in-process p50 (ms)", one["p50_ms"] - base["p50_ms"], 1.0, False),  # type: ignore[index]
    ]
    if isinstance(inf, dict):
        checks.append(("daemon 16 clients / Infinity", on["texts_per_s"] / inf["texts_per_s"], 1.3, True))  # type: ignore[index]
    verdicts = Table(title="targets")
    for column in ("ratio", "value", "target", "met"):
        verdicts.add_column(column)
    for name, value, target, at_least in checks:
        met = value >= target if at_least else value <= target
        verdicts.add_row(name, f"{value:.2f}", f"{'>=' if at_least else '<='} {target}", "yes" if met else "NO")
    Console().print(verdicts)


if __name__ == "__main__":
    main()
