"""Measure every candidate path of one model version; run as a subprocess by :mod:`run`.

    python -m hotswapd.tuning.measure --spec SPEC.json --out ROWS.json

It imports torch (the reference is fp32 sentence-transformers), so the daemon never runs
it in its own process. Each path is loaded through its backend exactly as the daemon would
load it (exports, quantisation and the backends' own accuracy gates included), timed on
short texts, on passages and one text at a time, compared with the reference on the check
sample, and closed before the next. A rerank version's paths score (query, document)
pairs instead, and are compared by each check query's document order (Spearman).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from hotswapd.host import children
from hotswapd.text.probe_texts import CALIBRATION_TEXTS, PROBE_TEXTS, check_sample
from hotswapd.backends.cross_encoder_export import check_pairs, spearman
from hotswapd.text.pairs import join_pair
from hotswapd.tuning.run_paths import PATHS, REFERENCE, RERANK_PATHS, backend_and_options, gate_options
from hotswapd.tuning.tune_record import PathRow

SHORT_ROUNDS = 2
SINGLE_CALLS = 21


def short_texts() -> list[str]:
    return [*PROBE_TEXTS, *CALIBRATION_TEXTS] * 6  # 240 texts of 5 to 20 words


def passages() -> list[str]:
    texts = [*PROBE_TEXTS, *CALIBRATION_TEXTS]
    return [" ".join(texts[i : i + 10]) for i in range(0, len(texts), 2)]  # 20 texts of ~150-200 tokens


def _rate(embedder: Any, texts: list[str], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        embedder.encode(texts, normalize=True)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def _single_p50_ms(embedder: Any) -> float:
    texts = short_texts()
    times = []
    for text in texts[:SINGLE_CALLS]:
        started = time.perf_counter()
        embedder.encode([text], normalize=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _cosines(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    got = np.asarray(vectors, dtype=np.float64)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cosines = np.clip(np.sum(got * reference, axis=1), -1.0, 1.0)
    return float(cosines.mean()), float(cosines.min())


def measure(name: str, backend: str, options: dict[str, Any], embedder: Any, reference: np.ndarray) -> PathRow:
    embedder.encode(short_texts()[:64], normalize=True)  # warm-up: first-call allocations, lazy compiles
    mean, lowest = _cosines(embedder.encode(check_sample(), normalize=True), reference)
    return PathRow(
        path=name,
        backend=backend,
        options=options,
        status="measured",
        short_per_second=round(_rate(embedder, short_texts(), SHORT_ROUNDS), 1),
        passages_per_second=round(_rate(embedder, passages(), 1), 1),
        single_p50_ms=round(_single_p50_ms(embedder), 2),
        mean_cosine=mean,
        min_cosine=lowest,
    )


def short_pairs() -> list[str]:
    texts = short_texts()
    return [join_pair(texts[i], texts[(i * 7 + 3) % len(texts)]) for i in range(len(texts))]


def passage_pairs() -> list[str]:
    return [join_pair(PROBE_TEXTS[i % len(PROBE_TEXTS)], passage) for i, passage in enumerate(passages())]


def check_scores(scorer: Any) -> np.ndarray:
    """A reranker's logits for each check query (rows) and document (columns)."""
    queries, documents = check_pairs()
    return np.vstack([scorer.encode([join_pair(query, d) for d in documents], normalize=False)[:, 0] for query in queries]).astype(np.float64)


def measure_rerank(name: str, backend: str, options: dict[str, Any], scorer: Any, reference: np.ndarray) -> PathRow:
    """A rerank path: pairs/s on short pairs and on (question, passage) pairs, one pair per
    call, and each check query's document order against the torch cross-encoder's."""
    scorer.encode(short_pairs()[:64], normalize=False)  # warm-up
    got = check_scores(scorer)
    correlations = [spearman(expected, row) for expected, row in zip(reference, got, strict=True)]
    single = []
    for pair in short_pairs()[:SINGLE_CALLS]:
        started = time.perf_counter()
        scorer.encode([pair], normalize=False)
        single.append((time.perf_counter() - started) * 1000)
    return PathRow(
        path=name, backend=backend, options=options, status="measured",
        short_per_second=round(_rate(scorer, short_pairs(), SHORT_ROUNDS), 1),
        passages_per_second=round(_rate(scorer, passage_pairs(), 1), 1),
        single_p50_ms=round(statistics.median(single), 2),
        mean_spearman=float(np.mean(correlations)), min_spearman=min(correlations),
    )


def unavailable(name: str, device: str, task: str = "embed") -> str | None:
    """Why ``name`` cannot run here on ``device`` (a missing library, missing instructions,
    no GPU), or None. Imports torch only to ask about a GPU."""
    from hotswapd.backends.support import openvino_runtime
    from hotswapd.backends.support.precision import why_not

    backend, options = PATHS[name]
    if task == "rerank" and name not in RERANK_PATHS:
        return "a cross-encoder runs in fp32 on torch here"
    if backend == "torch":
        if find_spec("torch") is None or find_spec("sentence_transformers") is None:
            return "torch and sentence-transformers are not installed (pip install 'hotswap[sentence-transformers]')"
        return why_not(options.get("precision", "fp32"), device)
    if backend == "onnx":
        if find_spec("onnxruntime") is None or find_spec("onnx") is None:
            return "ONNX Runtime is not installed (pip install 'hotswap[onnx]')"
        if device.startswith("cuda") and options.get("quantize") == "int8":
            return "int8 ONNX runs on the CPU; this version runs on CUDA"
        return None
    if device.startswith("cuda"):
        return "OpenVINO runs on the CPU here; this version runs on CUDA"
    return openvino_runtime.unavailable(options.get("precision", "fp32"))


def _device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def measure_all(path: Path, base: dict[str, Any], names: list[str], gate: float) -> list[PathRow]:
    from hotswapd.backends import get_loader
    from hotswapd.config.schema import VersionConfig
    from hotswapd.errors import HotswapError

    device = _device(base.get("device", "auto"))
    task = base.get("task", "embed")
    rows: list[PathRow] = []
    reference: np.ndarray | None = None
    # The reference goes first: every other path is compared with its vectors.
    for name in sorted(names, key=lambda item: item != REFERENCE):
        backend, options = backend_and_options(name, path, task)
        reason = unavailable(name, device, task)
        if reason is not None:
            rows.append(PathRow(path=name, backend=backend, options=options, status="unavailable", reason=reason))
            continue
        if name != REFERENCE and reference is None:
            rows.append(PathRow(path=name, backend=backend, options=options, status="refused", reason=f"cannot be checked: the reference ({REFERENCE}) did not run"))
            continue
        config = VersionConfig.model_validate({**base, "backend": backend, "source": str(path), **gate_options(task, backend, gate), **options})
        try:
            embedder = get_loader(backend)(path, config)
        except HotswapError as exc:
            rows.append(PathRow(path=name, backend=backend, options=options, status="refused", reason=exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 -- a library failing in its own way refuses this path only
            rows.append(PathRow(path=name, backend=backend, options=options, status="refused", reason=f"{type(exc).__name__}: {exc}"))
            continue
        try:
            if reference is None and task == "rerank":
                reference = check_scores(embedder)
            elif reference is None:
                reference = np.asarray(embedder.encode(check_sample(), normalize=True), dtype=np.float64)
                reference /= np.linalg.norm(reference, axis=1, keepdims=True)
            measured = measure_rerank if task == "rerank" else measure
            rows.append(measured(name, backend, options, embedder, reference))
        finally:
            embedder.close()
            del embedder
            gc.collect()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    children.stop_all_on_sigterm()  # the daemon stopping ends the conversions this runs too
    spec = json.loads(args.spec.read_text())
    if REFERENCE not in spec["paths"]:
        spec["paths"].insert(0, REFERENCE)
    rows = measure_all(Path(spec["path"]), spec["version"], spec["paths"], spec["gate"])
    args.out.write_text(json.dumps([row.model_dump() for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
