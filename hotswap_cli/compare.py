"""``hs compare``: how different are two versions' vectors, and how fast is each?"""


import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hotswapd.client.connection import Client
from hotswapd.text.probe_texts import PROBE_TEXTS

from hotswap_cli.output import Column, print_json, print_table, stdout_is_terminal, write_tsv
from hotswap_cli.waiting import waiting

NEIGHBOURS = 10


def _sample(path: Path | None, limit: int) -> list[str]:
    if path is None:
        return list(PROBE_TEXTS)
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [line for line in lines if line][:limit]
    if len(texts) < 2:  # neighbours need at least two texts
        raise typer.BadParameter(f"{path} has {len(texts)} non-empty lines; at least 2 are needed", param_hint="'--input'")
    return texts


def _encode_timed(client: Client, texts: list[str], spec: str, chunk: int = 256) -> tuple[Any, float, float]:
    """All vectors, throughput (texts/s) and single-text p50 latency (ms) of one version,
    computed by the model: the daemon's embedding cache is bypassed (no_cache), or a second
    run would time cache hits."""
    import numpy as np

    started = time.perf_counter()
    parts = [client.encode(texts[i : i + chunk], spec, no_cache=True).embeddings for i in range(0, len(texts), chunk)]
    throughput = len(texts) / (time.perf_counter() - started)
    latencies = []
    for text in texts[:50]:
        t = time.perf_counter()
        client.encode([text], spec, no_cache=True)
        latencies.append((time.perf_counter() - t) * 1000)
    return np.vstack(parts), throughput, float(np.median(latencies))


def compare_vectors(a: Any, b: Any) -> dict[str, float | None]:
    """Cosine between the versions' vectors of the same text, and top-k neighbour overlap."""
    import numpy as np

    def unit(m: Any) -> Any:
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    ua, ub = unit(a.astype(np.float64)), unit(b.astype(np.float64))
    cosine = np.sum(ua * ub, axis=1) if a.shape == b.shape else None
    k = min(NEIGHBOURS, len(a) - 1)
    overlap = None
    if k > 0:
        def neighbours(u: Any) -> Any:
            sims = u @ u.T
            np.fill_diagonal(sims, -np.inf)
            return np.argsort(-sims, axis=1)[:, :k]

        na, nb = neighbours(ua), neighbours(ub)
        overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)]))
    return {
        "mean_cosine": float(cosine.mean()) if cosine is not None else None,
        "min_cosine": float(cosine.min()) if cosine is not None else None,
        "neighbour_overlap": overlap,
    }


def compare(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.", metavar="MODEL")],
    first: Annotated[str, typer.Argument(help="A version.", metavar="VERSION")],
    second: Annotated[str, typer.Argument(help="Another version.", metavar="VERSION")],
    input_file: Annotated[Path | None, typer.Option("--input", help="Sample texts, one per line (default: a built-in probe set).", exists=True, dir_okay=False)] = None,
    limit: Annotated[int, typer.Option(help="At most this many lines of --input.", min=2)] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Encode a sample with two versions: agreement, neighbour overlap, speed (cache bypassed).

    Example: hs compare minilm v1 v2 --input sample.txt
    """
    texts = _sample(input_file, limit)
    client = ctx.obj.client()
    with waiting(ctx.obj, f"comparing {model} {first} and {second}", model) as wait:
        for version in (first, second):  # loaded and warm before any clock starts
            wait.doing(f"loading {model}@{version}")
            client.preload(f"{model}@{version}")
            client.encode(texts[:8], f"{model}@{version}", no_cache=True)
        wait.doing(f"measuring {model}@{first} on {len(texts)} texts")
        a, speed_a, p50_a = _encode_timed(client, texts, f"{model}@{first}")
        wait.doing(f"measuring {model}@{second} on {len(texts)} texts")
        b, speed_b, p50_b = _encode_timed(client, texts, f"{model}@{second}")
    result = {
        "model": model,
        "texts": len(texts),
        **compare_vectors(a, b),
        "versions": {
            first: {"dim": int(a.shape[1]), "texts_per_s": round(speed_a, 1), "p50_ms": round(p50_a, 2)},
            second: {"dim": int(b.shape[1]), "texts_per_s": round(speed_b, 1), "p50_ms": round(p50_b, 2)},
        },
    }
    if as_json:
        print_json(result)
        return

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    if not stdout_is_terminal():
        # One table for scripts, one figure per line: what, of which version (or of the
        # pair, "V1+V2"), and its value.
        pair = f"{first}+{second}"
        write_tsv([Column("measure"), Column("version"), Column("value")], [
            *[["dimension", v, str(m.shape[1])] for v, m in ((first, a), (second, b))],
            *[["texts_per_s", v, f"{s:.1f}"] for v, s in ((first, speed_a), (second, speed_b))],
            *[["p50_ms", v, f"{s:.2f}"] for v, s in ((first, p50_a), (second, p50_b))],
            ["mean_cosine", pair, fmt(result["mean_cosine"])],
            ["min_cosine", pair, fmt(result["min_cosine"])],
            [f"top{NEIGHBOURS}_neighbour_overlap", pair, fmt(result["neighbour_overlap"])],
        ])
        return
    # Speed is a figure per version; agreement is one figure for the pair, so it gets its
    # own table rather than a cell under either version.
    print_table(
        f"{model}: {first} vs {second} on {len(texts)} texts",
        [Column("measure"), Column(first), Column(second)],
        [
            ["dimension", str(a.shape[1]), str(b.shape[1])],
            ["throughput (texts/s)", f"{speed_a:.1f}", f"{speed_b:.1f}"],
            ["one text p50 (ms)", f"{p50_a:.2f}", f"{p50_b:.2f}"],
        ],
    )
    print_table(
        "agreement",
        [Column("measure"), Column("value")],
        [
            ["mean cosine", fmt(result["mean_cosine"])],
            ["min cosine", fmt(result["min_cosine"])],
            [f"top-{NEIGHBOURS} neighbour overlap", fmt(result["neighbour_overlap"])],
        ],
    )
