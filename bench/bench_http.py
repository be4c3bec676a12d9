"""HTTP benchmark (issue 14): hotswapd's OpenAI endpoint, its ZeroMQ socket, and Infinity's
own HTTP server, in one run and one process tree.

    python bench/bench_http.py [--seconds 15] [--clients 16] [--no-infinity]

Same model (all-MiniLM-L6-v2), same BBC News sentences, the embedding cache off; each
path is driven by ``--clients`` client processes, first sending single texts, then
batches of 32:
  hotswapd HTTP, auto           POST /v1/embeddings, base64 (a kept-alive socket client,
                                bench/http_load.py; ``--client httpx`` for httpx), on
                                ``backend = "auto"``: the path `hs tune` measures fastest on
                                this machine at mean cosine >= 0.99 to fp32 (its first load
                                measures, a minute or more)
  hotswapd ZeroMQ, auto         the Python client, the baseline of the HTTP path
  hotswapd HTTP, ONNX int8      the very int8 file Infinity's optimum engine is given
  hotswapd HTTP, sentence-transformers   (with ``--st``, and its ZeroMQ twin)
  Infinity HTTP, torch          `infinity_emb v2 --engine torch` (its own venv, bench/.infinity-venv)
  Infinity HTTP, optimum        `--engine optimum` (ONNX), pooling_method=mean
Beside texts/s, the server's own CPU ms per text: clients and server share the machine.
Targets: the HTTP path >= 0.9x the ZeroMQ path on the same backend; hotswapd HTTP on auto
>= 2x Infinity's best engine, both over HTTP (issue 28).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402

INFINITY_VENV = HERE / ".infinity-venv"
INFINITY_REQUIREMENT = "infinity-emb[torch,optimum,server]==0.0.78"
BATCH = 32


def http_worker(url: str, model: str, texts: list[str], batch: int, seconds: float, tag: str, out: Any) -> None:
    """POST /embeddings over one kept-alive connection (bench/http_load.py, or httpx with
    ``--client httpx``), in the format the ``openai`` package asks for by default."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    prefix = parts.path.rstrip("/")
    if os.environ.get("BENCH_HTTP_CLIENT") == "httpx":
        import httpx

        web = httpx.Client(timeout=300)

        def post(body: dict[str, Any]) -> Any:
            answer = web.post(f"{url}/embeddings", json=body)
            answer.raise_for_status()
            return answer.json()
    else:
        from bench.http_load import KeepAliveClient

        web = KeepAliveClient(parts.hostname or "127.0.0.1", parts.port or 80)

        def post(body: dict[str, Any]) -> Any:
            return web.post_json(f"{prefix}/embeddings", body)

    done = 0
    try:
        post({"model": model, "input": [f"warm-up {tag}"], "encoding_format": "base64"})
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunk = [f"{texts[(done + i) % len(texts)]} [{tag}-{done + i}]" for i in range(batch)]
            answer = post({"model": model, "input": chunk, "encoding_format": "base64"})
            if len(answer["data"]) != batch:
                raise RuntimeError(f"{len(answer['data'])} embeddings for {batch} texts")
            done += batch
    finally:
        web.close()
    out.put(done)


def zmq_worker(endpoint: str, model: str, texts: list[str], batch: int, seconds: float, tag: str, out: Any) -> None:
    from hotswapd import Client

    done = 0
    with Client(endpoint, timeout=300) as client:
        client.encode([f"warm-up {tag}"], model)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.encode([f"{texts[(done + i) % len(texts)]} [{tag}-{done + i}]" for i in range(batch)], model)
            done += batch
    out.put(done)


def crowd(worker: Any, target: str, model: str, texts: list[str], clients: int, batch: int, seconds: float, tag: str, server: int) -> tuple[float, float]:
    """Texts per second of ``clients`` processes, each sending ``batch`` texts at a time, and
    the server's CPU milliseconds per text meanwhile (process ``server`` and its children):
    on a machine the clients share, the second says what the server itself spends."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_run_reporting, args=(worker, target, model, texts[i::clients], batch, seconds, f"{tag}{i}", out)) for i in range(clients)]
    for proc in procs:
        proc.start()
    before = cpu_seconds(server)
    counts = [out.get(timeout=seconds + 600) for _ in procs]
    spent = cpu_seconds(server) - before
    for proc in procs:
        proc.join()
    if min(counts) < 0:
        raise RuntimeError(f"{sum(c < 0 for c in counts)} of {clients} clients failed (see stderr)")
    return sum(counts) / seconds, 1000 * spent / max(1, sum(counts))


def cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and every process under it, from /proc (Linux)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def _run_reporting(worker: Any, *args: Any) -> None:
    """A client process that always reports: its count, or -1 when it failed."""
    out = args[-1]
    try:
        worker(*args)
    except Exception as exc:  # noqa: BLE001 -- reported to the parent as a failure, never a silent hang
        print(f"client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        out.put(-1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def infinity_model(workdir: Path) -> Path:
    """MiniLM for Infinity: its optimum engine reads ONNX files beside the model and prefers a
    quantised one on a CPU; it gets the very int8 file hotswapd exported and serves."""
    target = workdir / "infinity-model"
    shutil.copytree(minilm_dir(), target)
    exported = sorted((workdir / "cache" / "hotswapd" / "onnx").glob("*/model.onnx"))
    if exported:
        shutil.copy(exported[0], target / "model_quantized.onnx")
    return target


def infinity_server(engine: str, model: Path, port: int, log: Path) -> subprocess.Popen[bytes] | str:
    python = INFINITY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(HERE.parent / "constraints.txt"), INFINITY_REQUIREMENT], capture_output=True, text=True)
        if done.returncode != 0:
            return "pip could not install infinity-emb: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    command = [
        # "." from inside the directory: given an absolute path, Infinity 0.0.78's optimum engine
        # looks for the ONNX file under its absolute name and does not find it.
        str(INFINITY_VENV / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--served-model-name", "minilm",
        "--engine", engine, "--port", str(port), "--host", "127.0.0.1", "--batch-size", str(BATCH), "--no-bettertransformer",
    ]
    if engine == "optimum":
        command += ["--pooling-method", "mean"]
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "PATH": f"{INFINITY_VENV / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=model)
    import httpx

    deadline = time.monotonic() + 900  # the optimum engine exports to ONNX on first start
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"infinity ({engine}) exited: " + (log.read_text(errors="replace").strip().splitlines() or ["?"])[-1]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    return f"infinity ({engine}) did not answer within 900 s"


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--no-infinity", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the hotswapd paths, interleaved; the median counts")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", choices=["socket", "httpx"], default="socket", help="the HTTP clients' library")
    parser.add_argument("--st", action="store_true", help="also sentence-transformers over HTTP and ZeroMQ")
    args = parser.parse_args()
    if args.client == "httpx":
        os.environ["BENCH_HTTP_CLIENT"] = "httpx"  # inherited by the spawned clients

    texts = sentences(4000)
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-http-"))
    port = free_port()
    int8 = f'backend = "onnx"\nsource = "{minilm_dir()}"\nquantize = "int8"\npreload = true\n'
    torch = f'backend = "sentence-transformers"\nsource = "{minilm_dir()}"\ndevice = "cpu"\npreload = true\n'
    auto = f'backend = "auto"\nsource = "{minilm_dir()}"\npreload = true\n'
    config = write_config(
        workdir / "config.toml",
        f'[cache]\nmax_mb = 0\n[http]\nlisten = "127.0.0.1:{port}"\n[models.minilm]\nactive = "auto"\n'
        f"[models.minilm.versions.auto]\n{auto}[models.minilm.versions.int8]\n{int8}" + (f"[models.minilm.versions.st]\n{torch}" if args.st else ""),
    )
    rows: dict[str, dict[str, float | str]] = {}
    daemon = start_daemon(config, workdir, extra_env={"XDG_CACHE_HOME": str(workdir / "cache")}, wait=900)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            chosen = [v for model in client.models() for v in model.get("version_detail", []) if v.get("version") == "auto"]
            print(f"auto chose: {chosen[0].get('path')} ({chosen[0].get('path_reason')})" if chosen else "auto: not described", flush=True)
        paths = [
            ("hotswapd HTTP, auto", http_worker, url, "minilm@auto"),
            ("hotswapd ZeroMQ, auto", zmq_worker, daemon.endpoint, "minilm@auto"),
            ("hotswapd HTTP, ONNX int8", http_worker, url, "minilm@int8"),
        ]
        if args.st:
            paths += [("hotswapd HTTP, sentence-transformers", http_worker, url, "minilm@st"),
                      ("hotswapd ZeroMQ, sentence-transformers", zmq_worker, daemon.endpoint, "minilm@st")]
        # Rounds interleave the paths, so a slow minute of a shared machine does not land
        # on one path only; the median of the rounds is reported.
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for round_ in range(args.repeat):
            for batch in (1, BATCH):
                for name, worker, target, model in paths:
                    figures = crowd(worker, target, model, texts, args.clients, batch, args.seconds, f"{name[:3]}{round_}", daemon.process.pid)
                    samples.setdefault((name, batch), []).append(figures)
        for (name, batch), values in samples.items():
            rows.setdefault(name, {})[f"batch {batch}"] = statistics.median(rate for rate, _ in values)
            rows[name][f"cpu {batch}"] = statistics.median(cpu for _, cpu in values)
    finally:
        daemon.stop()
    if not args.no_infinity:
        model = infinity_model(workdir)
        for engine in ("torch", "optimum"):
            port = free_port()
            server = infinity_server(engine, model, port, workdir / f"infinity-{engine}.log")
            name = f"Infinity HTTP, {engine}"
            if isinstance(server, str):
                rows[name] = {"batch 1": server}
                continue
            try:
                for b in (1, BATCH):
                    rate, cpu = crowd(http_worker, f"http://127.0.0.1:{port}", "minilm", texts, args.clients, b, args.seconds, "inf", server.pid)
                    rows.setdefault(name, {}).update({f"batch {b}": rate, f"cpu {b}": cpu})
            finally:
                stop(server)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def report(rows: dict[str, dict[str, float | str]]) -> None:
    client = os.environ.get("BENCH_HTTP_CLIENT", "keep-alive socket (bench/http_load.py)")
    print(f"\nHTTP client: {client}; server CPU = ms of the server process tree's CPU per text")
    print(f"{'path':<40} {'texts/s, single':>16} {'texts/s, batch 32':>18} {'CPU ms/text, single':>20} {'batch 32':>9}")
    for name, figures in rows.items():
        cells = []
        for key, width in (("batch 1", 16), (f"batch {BATCH}", 18), ("cpu 1", 20), (f"cpu {BATCH}", 9)):
            value = figures.get(key, "")
            cells.append(f"{value:>{width}.{1 if key.startswith('batch') else 2}f}" if isinstance(value, float) else f"{value!s:>{width}}")
        print(f"{name:<40} " + " ".join(cells))

    def ratio(a: str, b: str, key: str) -> str:
        x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
        return f"{x / y:.2f}x" if isinstance(x, float) and isinstance(y, float) and y else "n/a"

    for key in ("batch 1", f"batch {BATCH}"):
        print(f"\n{key}: HTTP / ZeroMQ, auto: {ratio('hotswapd HTTP, auto', 'hotswapd ZeroMQ, auto', key)} (target >= 0.9x)")
        cpu = key.replace("batch", "cpu")
        print(f"{key}: server CPU per text, ZeroMQ / HTTP, auto: {ratio('hotswapd ZeroMQ, auto', 'hotswapd HTTP, auto', cpu)} (1.00x: HTTP costs the server nothing more)")
        infinity = [n for n in rows if n.startswith("Infinity") and isinstance(rows[n].get(key), float)]
        best = max(infinity, key=lambda n: rows[n][key]) if infinity else None  # type: ignore[arg-type, return-value]
        if best:
            print(f"{key}: hotswapd HTTP auto / {best}: {ratio('hotswapd HTTP, auto', best, key)} (target >= 2x)")
            print(f"{key}: hotswapd HTTP int8 / {best} (the same int8 file): {ratio('hotswapd HTTP, ONNX int8', best, key)}")
            print(f"{key}: server CPU per text, {best} / hotswapd HTTP auto: {ratio(best, 'hotswapd HTTP, auto', cpu)}")


if __name__ == "__main__":
    main()
