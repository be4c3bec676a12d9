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
  hs parquet   `hs encode -m VERSION --input in.parquet --output out.parquet` (id + text
               columns in; id + fixed_size_list<float32> out, checkpointed as it goes)
Rounds alternate the paths (this shared machine drifts by 10-20 % between minutes); the
median counts. Target: hs -f npy and hs parquet >= 0.97x in-process, for both backends.
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
    parser.add_argument("--backends", default="st,int8", help="comma-separated: st, int8")
    args = parser.parse_args()
    backends = [name for name in args.backends.split(",") if name]

    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-pipe-"))
    (work / "in.txt").write_text("\n".join(texts) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), work / "in.parquet")
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
            for version in backends:
                client.encode(["warm-up"], f"minilm@{version}")
        in_process = {"st": lambda: _torch_encoder(model_dir), "int8": lambda: _onnx_encoder(work, model_dir)}
        in_process = {version: in_process[version]() for version in backends}
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        for _ in range(args.rounds):
            for version in backends:
                started = time.perf_counter()
                in_process[version](texts)
                samples.setdefault((version, "in-process"), []).append(len(texts) / (time.perf_counter() - started))
                started = time.perf_counter()
                with open(work / "in.txt", "rb") as source, open(work / "out.npy", "wb") as sink:
                    subprocess.run([str(HS), "encode", "-m", f"minilm@{version}", "-f", "npy"], stdin=source, stdout=sink, env=env, check=True)
                samples.setdefault((version, "hs -f npy"), []).append(len(texts) / (time.perf_counter() - started))
                started = time.perf_counter()
                (work / "out.parquet").unlink(missing_ok=True)
                subprocess.run([str(HS), "encode", "-m", f"minilm@{version}", "-i", str(work / "in.parquet"), "-o", str(work / "out.parquet")],
                               env=env, check=True, stderr=subprocess.DEVNULL)
                samples.setdefault((version, "hs parquet"), []).append(len(texts) / (time.perf_counter() - started))
                with daemon.client(timeout=900) as client:
                    started = time.perf_counter()
                    for _ in client.encode_stream([texts[i : i + 256] for i in range(0, len(texts), 256)], f"minilm@{version}"):
                        pass
                samples.setdefault((version, "client"), []).append(len(texts) / (time.perf_counter() - started))
    finally:
        daemon.stop()
    print(f"\n{len(texts):,} BBC sentences, cache off, median of {args.rounds} rounds (texts/s)")
    paths = ("in-process", "hs -f npy", "hs parquet", "client")
    print(f"{'backend':<22} " + " ".join(f"{path:>11}" for path in paths) + "   ratios to in-process")
    for version, name in (("st", "sentence-transformers"), ("int8", "ONNX int8")):
        if version not in backends:
            continue
        rates = [statistics.median(samples[(version, path)]) for path in paths]
        ratios = "  ".join(f"{path} {rate / rates[0]:.2f}x" for path, rate in zip(paths[1:], rates[1:], strict=True))
        print(f"{name:<22} " + " ".join(f"{rate:11.0f}" for rate in rates) + f"   {ratios}")
    print("target: hs -f npy and hs parquet >= 0.97x in-process")


def _torch_encoder(model_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(["warm-up"] * 64, batch_size=32)
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def _onnx_encoder(work: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    from hotswapd.backends.support.model_files import read_layout
    from hotswapd.backends.onnx import OnnxEmbedder

    exported = next((work / "cache" / "hotswapd" / "onnx").glob("*/model.onnx"))
    layout = read_layout(model_dir)
    embedder = OnnxEmbedder.create(exported, layout, layout.pooling or "mean", device="cpu", batch_size=32, threads=None)
    embedder.encode(["warm-up"] * 64, normalize=True)
    return lambda texts: embedder.encode(texts, normalize=True)


if __name__ == "__main__":
    main()
