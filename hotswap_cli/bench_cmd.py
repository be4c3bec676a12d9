"""``hs bench``: measure model versions through the daemon, and keep a history of the runs."""


import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from hotswapd.benchmarking import history
from hotswapd.client.connection import Client
from hotswapd.errors import HotswapError
from hotswapd.text.probe_texts import PROBE_TEXTS

from hotswap_cli.arguments import finite
from hotswap_cli.output import Column, print_json, print_table, short_time, stdout_is_terminal

HISTORY_SHOWN = 20


def builtin_corpus() -> list[str]:
    """256 texts of varied length from the probe set: every ordered pair of probe texts."""
    return [a if a is b else f"{a} {b}" for a in PROBE_TEXTS for b in PROBE_TEXTS]


def _texts(input_file: Path | None) -> list[str]:
    if input_file is None:
        return builtin_corpus()
    lines = [line.strip() for line in input_file.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise typer.BadParameter(f"{input_file} has no non-empty lines", param_hint="--input")
    return texts


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _latencies(client: Client, spec: str, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        client.encode([text], spec)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _throughput(client: Client, spec: str, texts: list[str], batch: int, concurrency: int, seconds: float, tag: str) -> float:
    """Texts per second with ``concurrency`` clients sending ``batch`` texts each, for ``seconds``."""
    done = [0] * concurrency
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        with Client(client.endpoint, timeout=client.timeout) as own:
            round_ = 0
            while time.monotonic() < deadline:
                # Unique texts, so the cache does not flatter the figure.
                start = (round_ * batch) % len(texts)
                chunk = [f"{text} [{tag}-{index}-{round_}]" for text in (texts * 2)[start : start + batch]]
                own.encode(chunk, spec)
                done[index] += len(chunk)
                round_ += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def measure(client: Client, spec: str, texts: list[str], batch: int, concurrency: int, seconds: float, advance: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    loaded = client.preload(spec)
    advance()
    sample = [f"{text} [{tag}]" for text in texts[:100]]
    cold = _latencies(client, spec, sample)
    warm = _latencies(client, spec, sample)  # the same texts again: served by the cache
    advance()
    throughput = _throughput(client, spec, texts, batch, concurrency, seconds, tag)
    advance()
    return {
        "model": loaded["model"],
        "version": loaded["version"],
        "backend": loaded.get("backend"),
        "load_seconds": loaded["load_seconds"],
        "memory_bytes": loaded["memory_bytes"],
        "p50_ms": round(_percentile(cold, 50), 3),
        "p95_ms": round(_percentile(cold, 95), 3),
        "p99_ms": round(_percentile(cold, 99), 3),
        "cached_p50_ms": round(_percentile(warm, 50), 3),
        "texts_per_s": round(throughput, 1),
        "batch_size": batch,
        "concurrency": concurrency,
    }


def _agreement(client: Client, rows: list[dict[str, Any]], texts: list[str]) -> None:
    """Mean cosine of each version with the first version of the same model on the sample."""
    import numpy as np

    sample = texts[:64]
    first: dict[str, Any] = {}
    for row in rows:
        vectors = np.asarray(client.encode(sample, f"{row['model']}@{row['version']}").embeddings, dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        base = first.setdefault(row["model"], vectors)
        if base is not vectors and base.shape == vectors.shape:
            row["cosine_vs_first"] = round(float(np.sum(base * vectors, axis=1).mean()), 5)


def _record(rows: list[dict[str, Any]]) -> None:
    at = time.time()
    path = history.history_path()
    try:
        history.append(path, [{"at": at, **row} for row in rows])
    except OSError as exc:
        raise HotswapError(f"measured, but cannot record the run in {path}: {exc.strerror or exc}") from None


def _show_history(as_json: bool) -> None:
    path = history.history_path()
    entries = history.read_history(path)
    latest = history.latest_rounds(entries)
    recommended = {model: next((row for row in rows if row.get("recommended") is True), None) for model, rows in latest.items()}
    shown = entries[-HISTORY_SHOWN:]
    if as_json:
        print_json(shown)  # a periodic round's rows carry "round", "active", "agreement" and "recommended"
        return
    previous: dict[str, float] = {}
    rows = []
    for index, entry in enumerate(entries):  # trends over the whole file, rows for the last ones
        name = f"{entry['model']}@{entry['version']}"
        speed = entry["texts_per_s"]
        trend = f"{(speed / previous[name] - 1) * 100:+.0f}%" if previous.get(name) else ""
        previous[name] = speed
        if index < len(entries) - HISTORY_SHOWN:
            continue
        when = short_time(entry["at"]) if stdout_is_terminal() else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry["at"]))
        # A periodic round records its agreement with the active version; `hs bench`, each
        # version's mean cosine with the first version it measured.
        agreement = entry.get("agreement", entry.get("cosine_vs_first"))
        kind = "periodic" if entry.get("periodic") is True else "hs bench"
        mark = "★" if entry.get("recommended") is True else ""
        rows.append([when, name, mark, kind, f"{speed:.1f}", trend, f"{entry['p50_ms']:.1f}", f"{entry['p99_ms']:.1f}",
                     f"{agreement:.4f}" if isinstance(agreement, (int, float)) else "-", f"b{entry['batch_size']} c{entry['concurrency']}"])
    print_table(f"bench history ({path}; ★ recommended by the latest periodic round)", HISTORY_COLUMNS, rows)
    for model, row in sorted(recommended.items()):
        if row is not None:
            # Under a table on a terminal; on stderr when stdout is TSV, which stays parseable.
            print(_recommendation_line(model, _recommendation(row, latest[model])), file=sys.stdout if stdout_is_terminal() else sys.stderr)


def _recommendation(row: dict[str, Any], round_rows: list[dict[str, Any]]) -> dict[str, Any]:
    active = next((r for r in round_rows if r.get("active") is True), None)
    return {
        "version": row["version"],
        "texts_per_s": row["texts_per_s"],
        "vs_active": round(row["texts_per_s"] / active["texts_per_s"], 3) if active else None,
        "active": active["version"] if active else None,
        "agreement": row.get("agreement"),
        "at": row["at"],
    }


def _recommendation_line(model: str, rec: dict[str, Any]) -> str:
    if rec["active"] is None or rec["version"] == rec["active"]:
        return f"recommendation for {model}: keep {rec['version']} (the fastest that agrees with it)"
    agreement = f"{rec['agreement']:.4f}" if isinstance(rec["agreement"], float) else "-"
    return f"recommendation for {model}: {rec['version']}, {rec['vs_active']:.2f}x {rec['active']} at agreement {agreement} (hs switch {model} {rec['version']})"


# Kept first at 80 columns: which version, how fast, and whether its vectors agree with the
# first version's (cosine: whether it is safe to switch to); load, memory and the cached
# latency go first. The marker has a column of its own, so a script reads the version whole.
BENCH_COLUMNS = [
    Column("version"),
    Column("top"),
    Column("backend", drop=2),
    Column("load", drop=4),
    Column("memory", drop=3),
    Column("p50/p95/p99 ms", drop=6),
    Column("cached p50", drop=5),
    Column("texts/s"),
    Column("cosine"),
]
HISTORY_COLUMNS = [
    Column("when"), Column("version"), Column("recommended"), Column("kind", drop=3), Column("texts/s"), Column("vs last"), Column("p50 ms"),
    Column("p99 ms", drop=1), Column("agreement"), Column("setup", drop=2),
]


def bench(
    ctx: typer.Context,
    specs: Annotated[list[str] | None, typer.Argument(help="MODEL or MODEL@VERSION, one or more (default: the default model).", metavar="[MODEL[@VERSION]]...")] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="Texts, one per line.", exists=True, dir_okay=False)] = None,
    corpus: Annotated[str, typer.Option(help="Texts to use without --input: 'builtin'.")] = "builtin",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per request in the throughput phase.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Clients sending at once in the throughput phase.")] = 4,
    duration: Annotated[float, typer.Option(min=0.5, max=86400, help="Seconds of the throughput phase, per version.", callback=finite)] = 5.0,
    history: Annotated[bool, typer.Option("--history", help="Show past runs and their trend instead of measuring.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Measure versions through the daemon: load, memory, latency, throughput, cache, agreement.

    Example: hs bench minilm@v1 minilm@v2 --duration 10; hs bench --history
    """
    if history:
        _show_history(as_json)
        return
    if corpus != "builtin":
        raise typer.BadParameter("the only corpus is 'builtin' (or give --input FILE)", param_hint="--corpus")
    texts = _texts(input_file)
    client = ctx.obj.client()
    targets = specs or [""]
    from rich.console import Console
    from rich.progress import Progress

    rows = []
    # On stderr, and only on a terminal: stdout carries the table or the TSV, nothing else.
    with Progress(transient=True, console=Console(stderr=True), disable=as_json or not sys.stderr.isatty()) as progress:
        task = progress.add_task("benchmarking", total=3 * len(targets))
        for spec in targets:
            progress.update(task, description=f"benchmarking {spec or 'default model'}")
            rows.append(measure(client, spec or None, texts, batch_size, concurrency, duration, lambda: progress.advance(task)))  # type: ignore[arg-type]
    _agreement(client, rows, texts)
    try:
        _show(rows, texts, batch_size, concurrency, duration, as_json)
    finally:  # shown first: a history that cannot be written costs the record, not the figures
        _record(rows)


def _show(rows: list[dict[str, Any]], texts: list[str], batch_size: int, concurrency: int, duration: float, as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    fastest = max(range(len(rows)), key=lambda i: rows[i]["texts_per_s"])
    table = []
    for index, row in enumerate(rows):
        mark = "★" if index == fastest and len(rows) > 1 else ""
        memory = f"{row['memory_bytes'] / 2**20:.0f} MiB" if row["memory_bytes"] is not None else "-"
        table.append([
            f"{row['model']}@{row['version']}",
            mark,
            row["backend"] or "-",
            f"{row['load_seconds']:.2f} s",
            memory,
            f"{row['p50_ms']:.1f} / {row['p95_ms']:.1f} / {row['p99_ms']:.1f}",
            f"{row['cached_p50_ms']:.1f}",
            f"{row['texts_per_s']:.1f}",
            f"{row['cosine_vs_first']:.4f}" if "cosine_vs_first" in row else "-",
        ])
    print_table(
        f"hs bench: {len(texts)} texts, batch {batch_size}, {concurrency} clients, {duration:g} s each; ★ fastest; cosine: mean, with the first version",
        BENCH_COLUMNS,
        table,
    )
