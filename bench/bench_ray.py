"""The Ray benchmark (issue 16): the same parquet job through the daemon and on a local Ray.

    python bench/bench_ray.py [--sentences 3000] [--backend st|int8]

all-MiniLM-L6-v2, BBC News sentences, cache off, one run of each:
  daemon          `hs encode -i in.parquet -o out.parquet` (the daemon uses both cores)
  ray 1x1         `--ray --actors 1 --cpus-per-actor 1`: one actor, one compute thread
  ray 1x2         `--ray --actors 1 --cpus-per-actor 2`: one actor, two threads
  ray 2x1         `--ray --actors 2 --cpus-per-actor 1`: two actors, one thread each
Each Ray layout runs the job on N and on 2N rows: the marginal rate, N / (T(2N) - T(N)), is
its steady rows/s, and T(N) - N / marginal is its fixed cost (Ray's start-up, the actors'
imports and loads). Per-actor efficiency is the 2-actor marginal rate over twice the
1-actor one, on the same 2 cores.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences
from tests.conftest import HS, daemon_env
from tests.daemons import start_daemon, wait_ready, write_config
from tests.tinymodel import minilm_dir

SUMMARY = re.compile(r"\): ([\d.]+) s \(")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--backend", choices=("st", "int8"), default="st")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = sentences(2 * args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-ray-"))
    half = args.sentences
    pq.write_table(pa.table({"id": list(range(half)), "text": texts[:half]}), work / "in.parquet")
    pq.write_table(pa.table({"id": list(range(2 * half)), "text": texts}), work / "in2.parquet")
    model_dir = minilm_dir()
    backend = 'backend = "sentence-transformers"\ndevice = "cpu"\n' if args.backend == "st" else 'backend = "onnx"\nquantize = "int8"\n'
    config = write_config(work / "config.toml", f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "v"\n[models.minilm.versions.v]\n{backend}source = "{model_dir}"\npreload = true\n')
    cache = {"XDG_CACHE_HOME": str(work / "cache")}  # the actors find the daemon's ONNX export here too
    daemon = start_daemon(config, work, extra_env=cache, wait=900)
    rows: list[tuple[str, float, float | None, float | None]] = []
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            client.encode(["warm-up"], "minilm@v")
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1", **cache)
        started = time.perf_counter()
        subprocess.run([str(HS), "encode", "-i", str(work / "in.parquet"), "-o", str(work / "daemon.parquet")], env=env, check=True, stderr=subprocess.DEVNULL)
        rows.append(("daemon", half / (time.perf_counter() - started), None, None))
        for actors, cpus in ((1, 1), (1, 2), (2, 1)):
            seconds = [_ray_job(work / name, work / f"ray-{actors}x{cpus}.parquet", actors, cpus, env) for name in ("in.parquet", "in2.parquet")]
            marginal = half / max(seconds[1] - seconds[0], 1e-9)
            rows.append((f"ray {actors}x{cpus}", half / seconds[0], seconds[0] - half / marginal, marginal))
    finally:
        daemon.stop()
    print(f"\n{half:,} BBC sentences (and {2 * half:,} for the marginal rate), backend {args.backend}, cache off, one run each")
    print(f"{'path':<10} {'rows/s (job)':>13} {'fixed cost s':>13} {'marginal rows/s':>16}")
    for name, rate, fixed, steady in rows:
        print(f"{name:<10} {rate:13.0f} {fixed if fixed is not None else float('nan'):13.1f} {steady if steady is not None else float('nan'):16.0f}")
    one, two = rows[1][3], rows[3][3]
    if one and two:
        print(f"per-actor efficiency, 2 actors x 1 CPU against 1 actor x 1 CPU: {two / (2 * one):.2f}")


def _ray_job(source: Path, output: Path, actors: int, cpus: int, env: dict[str, str]) -> float:
    output.unlink(missing_ok=True)
    done = subprocess.run([str(HS), "encode", "-i", str(source), "-o", str(output), "--ray", "--actors", str(actors), "--cpus-per-actor", str(cpus)],
                          env=env, capture_output=True, check=False, timeout=1800)
    match = SUMMARY.search(done.stderr.decode())
    if done.returncode != 0 or match is None:
        raise SystemExit(f"ray {actors}x{cpus} failed: {done.stderr.decode()[-2000:]}")
    return float(match.group(1))


if __name__ == "__main__":
    main()
