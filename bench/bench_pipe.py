"""The pipe benchmark (issue 16): `hs encode -f npy < file` against the same backend
in-process, in one run.

    python bench/bench_pipe.py [--sentences 2000] [--rounds 3] [--backends st,int8,ov8] [--shape short|long]

all-MiniLM-L6-v2, BBC News sentences (10-20 words) or, with --shape long, passages of 160
words (~214 tokens; --sentences then counts passages), the embedding cache off. For each
backend (sentence-transformers on torch, ONNX int8, OpenVINO int8), round by round:
  in-process   the backend's own batch encode of all the texts, batch 32 (torch:
               SentenceTransformer.encode; int8: hotswapd's OnnxEmbedder on the very file
               the daemon exported)
  hs -f npy    `hs encode -m VERSION -f npy < file > out.npy` through the daemon
  client       Client.encode_stream of 512-text chunks (hs's own; 4 in flight), in this process
  hs parquet   `hs encode -m VERSION --input in.parquet --output out.parquet` (id + text
               columns in; id + fixed_size_list<float32> out, checkpointed as it goes)
  hs jsonl     the same from and to JSON lines
  http         POST /v1/embeddings (base64), chunks of 256 texts in input order, 4 in
               flight on kept-alive connections (bench/http_load.py), rows decoded
Rounds alternate the paths (this shared machine drifts by 10-20 % between minutes); the
median counts. Target (issue 28): every path >= 0.95x in-process, for every backend.
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

from bench.corpus import passages, sentences  # noqa: E402
from bench.bench_http import free_port  # noqa: E402
from tests.conftest import HS, daemon_env  # noqa: E402
from tests.daemons import start_daemon, wait_ready, write_config  # noqa: E402
from tests.tinymodel import minilm_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="st,int8", help="comma-separated: st, int8, ov8")
    parser.add_argument("--shape", choices=("short", "long"), default="short")
    args = parser.parse_args()
    backends = [name for name in args.backends.split(",") if name]

    texts = sentences(args.sentences) if args.shape == "short" else passages(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-pipe-"))
    (work / "in.txt").write_text("\n".join(texts) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), work / "in.parquet")
    import json

    (work / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
    model_dir = minilm_dir()
    st = f'backend = "sentence-transformers"\nsource = "{model_dir}"\ndevice = "cpu"\npreload = true\n'
    int8 = f'backend = "onnx"\nsource = "{model_dir}"\nquantize = "int8"\npreload = true\n'
    ov8 = f'backend = "openvino"\nsource = "{model_dir}"\nprecision = "int8"\npreload = true\n'
    sections = {"st": st, "int8": int8, "ov8": ov8}
    port = free_port()
    config = write_config(
        work / "config.toml",
        f'[cache]\nmax_mb = 0\n[http]\nlisten = "127.0.0.1:{port}"\n[models.minilm]\nactive = "st"\n' + "".join(f"[models.minilm.versions.{name}]\n{sections[name]}" for name in ("st", *[b for b in backends if b != "st"])),
    )
    daemon = start_daemon(config, work, extra_env={"XDG_CACHE_HOME": str(work / "cache")}, wait=900)
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        with daemon.client(timeout=900) as client:
            wait_ready(client, wait=900)
            for version in backends:
                client.encode(["warm-up"], f"minilm@{version}")
        in_process = {"st": lambda: _torch_encoder(model_dir), "int8": lambda: _onnx_encoder(work, model_dir), "ov8": lambda: _openvino_encoder(work, model_dir)}
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
                started = time.perf_counter()
                (work / "out.jsonl").unlink(missing_ok=True)
                subprocess.run([str(HS), "encode", "-m", f"minilm@{version}", "-i", str(work / "in.jsonl"), "-o", str(work / "out.jsonl")],
                               env=env, check=True, stderr=subprocess.DEVNULL)
                samples.setdefault((version, "hs jsonl"), []).append(len(texts) / (time.perf_counter() - started))
                with daemon.client(timeout=900) as client:
                    started = time.perf_counter()
                    for _ in client.encode_stream([texts[i : i + 512] for i in range(0, len(texts), 512)], f"minilm@{version}"):
                        pass
                samples.setdefault((version, "client"), []).append(len(texts) / (time.perf_counter() - started))
                started = time.perf_counter()
                _http_pipe(port, f"minilm@{version}", texts)
                samples.setdefault((version, "http"), []).append(len(texts) / (time.perf_counter() - started))
    finally:
        daemon.stop()
    kind = "BBC sentences" if args.shape == "short" else "BBC passages of 160 words"
    print(f"\n{len(texts):,} {kind}, cache off, median of {args.rounds} rounds: texts/s in-process, the others as its share")
    paths = ("in-process", "hs -f npy", "hs parquet", "hs jsonl", "client", "http")
    print(f"{'backend':<12} " + " ".join(f"{path:>10}" for path in paths))  # 12 + 6 x 11 = 78 columns
    for version, name in (("st", "st (torch)"), ("int8", "ONNX int8"), ("ov8", "OpenVINO i8")):
        if version not in backends:
            continue
        rates = [statistics.median(samples[(version, path)]) for path in paths]
        print(f"{name:<12} {rates[0]:>10.0f} " + " ".join(f"{rate / rates[0]:>9.2f}x" for rate in rates[1:]))
    print("target: every path >= 0.95x in-process")


def _http_pipe(port: int, model: str, texts: list[str], chunk: int = 256, in_flight: int = 4) -> None:
    """Every text through POST /v1/embeddings as an OpenAI client sends it (base64), chunks
    in input order on ``in_flight`` kept-alive connections; each answer's rows decoded."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from bench.http_load import KeepAliveClient

    chunks = [texts[at : at + chunk] for at in range(0, len(texts), chunk)]
    connections = [KeepAliveClient("127.0.0.1", port) for _ in range(in_flight)]

    def post(index: int) -> int:
        answer = connections[index % in_flight].post_json("/v1/embeddings", {"model": model, "input": chunks[index], "encoding_format": "base64"})
        rows = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in answer["data"]]
        return len(rows)

    try:
        # One connection serves one request at a time: chunk i goes to connection i % 4, in order.
        with ThreadPoolExecutor(in_flight) as pool:
            lanes = [pool.submit(lambda lane=lane: sum(post(i) for i in range(lane, len(chunks), in_flight))) for lane in range(in_flight)]
            if sum(lane.result() for lane in lanes) != len(texts):
                raise RuntimeError("the HTTP path returned a wrong number of rows")
    finally:
        for connection in connections:
            connection.close()


def _torch_encoder(model_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(["warm-up"] * 64, batch_size=32)
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def _onnx_encoder(work: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    from hotswapd.backends.onnx import OnnxEmbedder

    return _graph_encoder(model_dir, next((work / "cache" / "hotswapd" / "onnx").glob("*/model.onnx")), OnnxEmbedder.create, device="cpu")


def _openvino_encoder(work: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    from hotswapd.backends.openvino import OpenVinoEmbedder

    return _graph_encoder(model_dir, next((work / "cache" / "hotswapd" / "openvino").glob("*/*.xml")), OpenVinoEmbedder.create, precision="int8")


def _graph_encoder(model_dir: Path, exported: Path, create, **options):  # type: ignore[no-untyped-def]
    """hotswapd's own embedder on the very file the daemon converted, warmed up, batch 32."""
    from hotswapd.backends.support.model_files import read_layout

    layout = read_layout(model_dir)
    embedder = create(exported, layout, layout.pooling or "mean", batch_size=32, threads=None, **options)
    embedder.encode(["warm-up"] * 64, normalize=True)
    return lambda texts: embedder.encode(texts, normalize=True)


if __name__ == "__main__":
    main()
