"""Runs inside the Infinity venv (bench/bench_throughput.py starts it): Infinity's Python
engine on the same model and texts, with N concurrent callers sending single texts.

    python infinity_worker.py MODEL_DIR TEXTS_JSON CONCURRENCY SECONDS

Prints one JSON line: {"texts_per_s": ..., "p50_ms": ..., "load_s": ...}.
"""

import asyncio
import json
import statistics
import sys
import time


async def main(model_dir: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    started = time.perf_counter()
    engine = AsyncEmbeddingEngine.from_args(EngineArgs(model_name_or_path=model_dir, engine="torch", device="cpu", bettertransformer=False))
    async with engine:
        load_s = time.perf_counter() - started
        await engine.embed(sentences=texts[:64])  # warm-up
        latencies = []
        for text in texts[:100]:
            t0 = time.perf_counter()
            await engine.embed(sentences=[text])
            latencies.append((time.perf_counter() - t0) * 1000)
        done = [0] * concurrency
        deadline = time.monotonic() + seconds

        async def caller(index: int) -> None:
            position = index
            while time.monotonic() < deadline:
                await engine.embed(sentences=[texts[position % len(texts)]])
                done[index] += 1
                position += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"texts_per_s": sum(done) / elapsed, "p50_ms": statistics.median(latencies), "load_s": load_s}


if __name__ == "__main__":
    model_dir, texts_file, concurrency, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open(texts_file) as handle:
        texts = json.load(handle)
    print(json.dumps(asyncio.run(main(model_dir, texts, concurrency, seconds))))
