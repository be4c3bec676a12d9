"""The pipe benchmark (issue 16): `hs encode -f npy < file` against the same backend
in-process, in one run.

    python bench/bench_pipe.py [--sentences 2000] [--rounds 3]

all-MiniLM-L6-v2, BBC News sentences (10-20 words), the embedding cache off. For each
backend (sentence-transformers on torch, ONNX int8), round by round:
  in-process   the backend's own batch encode of all the texts, batch 32 (torch:
               SentenceTransformer.encode; int8: hotswapd's OnnxEmbedder on the very file
               the daemon exported)
  hs -f npy    `hs encode -m VERSION -f npy < file > out.npy` through the daemon
  client       Client.encode_stream of 256-text chunks (4 in flight), in this process
Rounds alternate the paths (this shared machine drifts by 10-20 % between minutes); the
median counts. Target: hs -f npy >= 0.97x in-process, for both backends.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus import sentences  # noqa: E402
from tests.conftest import HS, daemon_env  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-pipe-"))
    (work / "in.txt").write_text("\n".join(texts) + "\n")
    model_dir = minilm_dir()
    st = f'backend = "sentence-transformers"\nsource = "{model_dir}"\ndevice = "cpu"\npreload = true\n'
    int8 = f'backend = "onnx"\nsource = "{model_dir}"\nquantize = "int8"\npreload = true\n'
    config = write_config(
        work / "config.toml",
        f'[cache]\nmax_mb = 0\n[models.minilm]\nactive = "st"\n[models.minilm.versions.st]\n{st}[models.minilm.versions.int8]\n{int8}',
    )
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(work / "cache")}, wait=900)
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            for version in ("st", "int8"):
                client.encode(["warm-up"], f"minilm@{version}")
        in_process = {"st": _torch_encoder(model_dir), "int8": _onnx_encoder(work, model_dir)}
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        for _ in range(args.rounds):
            for version in ("st", "int8"):
                started = time.perf_counter()
                in_process[version](texts)
                samples.setdefault((version, "in-process"), []).append(len(texts) / (time.perf_counter() - started))
                started = time.perf_counter()
                with open(work / "in.txt", "rb") as source, open(work / "out.npy", "wb") as sink:
                    subprocess.run([str(HS), "encode", "-m", f"minilm@{version}", "-f", "npy"], stdin=source, stdout=sink, env=env, check=True)
                samples.setdefault((version, "hs -f npy"), []).append(len(texts) / (time.perf_counter() - started))
                with daemon.client(timeout=900) as client:
                    started = time.perf_counter()
                    for _ in client.encode_stream([texts[i : i + 256] for i in range(0, len(texts), 256)], f"minilm@{version}"):
                        pass
                samples.setdefault((version, "client"), []).append(len(texts) / (time.perf_counter() - started))
    finally:
        daemon.stop()
    print(f"\n{len(texts):,} BBC sentences, cache off, median of {args.rounds} rounds (texts/s)")
    print(f"{'backend':<22} {'in-process':>11} {'hs -f npy':>10} {'client':>8} {'hs/in-process':>14} {'client/in-process':>18}")
    for version, name in (("st", "sentence-transformers"), ("int8", "ONNX int8")):
        base, pipe, client_rate = (statistics.median(samples[(version, path)]) for path in ("in-process", "hs -f npy", "client"))
        print(f"{name:<22} {base:11.0f} {pipe:10.0f} {client_rate:8.0f} {pipe / base:13.2f}x {client_rate / base:17.2f}x")
    print("target: hs -f npy >= 0.97x in-process")


def _torch_encoder(model_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(["warm-up"] * 64, batch_size=32)
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def _onnx_encoder(work: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    from hotswapd.backends.layout import read_layout
    from hotswapd.backends.onnx import OnnxEmbedder

    exported = next((work / "cache" / "hotswapd" / "onnx").glob("*/model.onnx"))
    layout = read_layout(model_dir)
    embedder = OnnxEmbedder.create(exported, layout, layout.pooling or "mean", device="cpu", batch_size=32, threads=None)
    embedder.encode(["warm-up"] * 64, normalize=True)
    return lambda texts: embedder.encode(texts, normalize=True)


if __name__ == "__main__":
    main()
