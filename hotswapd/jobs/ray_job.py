"""The same file job on Ray: ``hs encode --input ... --output X.parquet --ray [ADDRESS]``.

Ray Data reads the input; a pool of actors (``ActorPoolStrategy(size=...)``) each loads
the version through hotswap's own loading code (:mod:`hotswapd.pipeline.standalone`) from the
daemon's config, and refuses to start unless its fingerprint is the one the daemon reports
for that version: the same files, the same backend options, the same vectors. The driver
writes the rows, in input order, to one parquet file (the id column, ``embedding`` as
``fixed_size_list<float32>``, the version and fingerprint in the metadata), renamed into
place at the end.

:class:`VersionEncoder` is the callable class to pass to ``Dataset.map_batches`` in a Ray
Data pipeline of your own. Ray is the ``ray`` extra; nothing here imports it until a job
runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswapd.client.connection import Client
from hotswapd.files.readers import detect_format
from hotswapd.jobs.job_record import JobError
from hotswapd.host.safefiles import sync_directory

MISMATCH = "is not the daemon's"  # in the refusal a worker raises; the driver finds it in Ray's error
BATCH_ROWS = 256
MIN_BLOCK_BYTES = 64 * 1024


class VersionEncoder:
    """``ds.map_batches(VersionEncoder, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(size=N),
    batch_format="pyarrow")``: adds ``embedding`` (fixed_size_list<float32>) for ``text_column``.

    ``expected_fingerprint`` (what ``hs models --json`` or a reply of the daemon names) makes
    the actor refuse a version whose files or options differ from the daemon's."""

    def __init__(self, config_path: str, version: str, *, expected_fingerprint: str | None = None, text_column: str = "text",
                 normalize: bool | None = None, threads: int | None = 1, keep_text: bool = False, prompt: str | None = None) -> None:
        from hotswapd.pipeline.standalone import load_version

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its threads would spin beside the model's
        self.loaded = load_version(Path(config_path), version, threads=threads)
        if expected_fingerprint is not None and self.loaded.fingerprint != expected_fingerprint:
            raise JobError(
                f"{self.loaded.model}@{self.loaded.version} on this worker {MISMATCH}: fingerprint {self.loaded.fingerprint} here, "
                f"{expected_fingerprint} in the daemon (its files or options differ; weights {self.loaded.weights})"
            )
        self.text_column, self.normalize, self.keep_text, self.prompt = text_column, normalize, keep_text, prompt

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from hotswapd.pipeline.standalone import encode_texts

        texts = batch.column(self.text_column).to_pylist()
        for offset, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise JobError(f"a row has no usable text in {self.text_column!r} ({type(text).__name__}: {str(text)[:40]!r}, row {offset + 1} of its batch)")
        vectors = encode_texts(self.loaded, texts, self.normalize, prompt=self.prompt)
        dim = vectors.shape[1]
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
        if not self.keep_text:
            batch = batch.drop_columns([self.text_column])
        return batch.append_column("embedding", embedding)


@dataclass
class RayJobResult:
    rows: int
    seconds: float
    model: str
    version: str
    fingerprint: str
    actors: int


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: a local Ray started for this job; "auto", "ray://HOST:10001": a cluster
    actors: int = 1
    cpus_per_actor: float = 1.0
    object_store_mb: int = 256  # a local Ray only: the default takes 30 % of memory
    batch_rows: int = BATCH_ROWS


def encode_file_on_ray(client: Client, model: str | None, input_path: Path, output: Path, *, text_field: str = "text", id_field: str | None = None,
                       input_format: str | None = None, normalize: bool | None = None, settings: RaySettings = RaySettings(),
                       prompt: str | None = None) -> RayJobResult:
    """Encode ``input_path`` into the parquet file ``output`` on Ray, with the version the
    daemon serves for ``model`` (pinned: the one it reports now)."""
    if output.suffix.lower() != ".parquet":
        raise JobError("a Ray job writes parquet: name the output NAME.parquet")
    fmt = detect_format(input_path, input_format)
    probe = client.encode(["hotswap: which version serves this job"], model, prompt=prompt)  # an unknown prompt fails here, before Ray starts
    status = client.status()
    config_path = status.get("config_path")
    if not config_path:
        raise JobError("the daemon runs without a config file; a Ray job's workers load the version from the same config: start it with --config")
    ray = _ray()
    started = time.perf_counter()
    _init(ray, settings, input_path.stat().st_size)
    try:
        dataset = _read(ray, fmt, input_path, text_field, id_field)
        encoded = dataset.map_batches(
            VersionEncoder,
            fn_constructor_kwargs={"config_path": config_path, "version": f"{probe.model}@{probe.version}", "expected_fingerprint": probe.fingerprint,
                                   "text_column": text_field, "normalize": normalize, "threads": max(1, int(settings.cpus_per_actor)),
                                   "prompt": prompt},
            compute=ray.data.ActorPoolStrategy(size=settings.actors),
            batch_size=settings.batch_rows,
            batch_format="pyarrow",
            num_cpus=settings.cpus_per_actor,
        )
        facts = {"model": probe.model, "version": probe.version, "fingerprint": probe.fingerprint, "dim": probe.dim,
                 "normalized": normalize is not False, "input": str(input_path.resolve()), "engine": f"ray {ray.__version__}"}
        rows = _write(encoded, output, id_field, facts)
    except JobError:
        raise
    except Exception as exc:  # noqa: BLE001 -- Ray wraps a worker's error in its own types; say it in one line
        raise JobError(_explain(exc)) from None
    finally:
        if settings.address is None:
            ray.shutdown()
    return RayJobResult(rows, time.perf_counter() - started, probe.model, probe.version, probe.fingerprint or "", settings.actors)


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise JobError("--ray needs Ray Data: pip install 'hotswap[ray]'") from None
    return ray


def _init(ray: Any, settings: RaySettings, input_bytes: int) -> None:
    if ray.is_initialized():
        ray.shutdown()
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if settings.address is None:
        # A local Ray on this machine: as many CPUs as the actors take (and one for reading
        # and the driver), and a bounded object store, or readers, actors and the driver
        # oversubscribe the cores and Ray reserves 30 % of memory.
        cpus = max(1, int(settings.actors * settings.cpus_per_actor)) + 1
        options |= {"num_cpus": cpus, "object_store_memory": settings.object_store_mb * 2**20}
    else:
        options["address"] = settings.address
    ray.init(**options)
    # Ray Data's plan, timing and worker tracebacks are not ours to print: a failure is
    # reported in one line (see _explain).
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    context.enable_progress_bars = False
    # Ray Data gives an actor whole blocks, and a small file (one parquet row group) is one
    # block: every actor but one would idle. Blocks of a quarter of each actor's share, at
    # least 64 KiB and at most Ray's own 128 MiB, keep them all busy.
    context.target_max_block_size = max(MIN_BLOCK_BYTES, min(context.target_max_block_size, input_bytes // (4 * settings.actors)))


def _read(ray: Any, fmt: str, path: Path, text_field: str, id_field: str | None) -> Any:
    """The columns the job needs, read as the daemon's job reads them: a .txt's blank lines
    stay rows (and fail as empty texts), a CSV's fields stay strings, a named id column
    must exist."""
    source = str(path.resolve())
    if fmt == "txt":
        if text_field != "text" or id_field is not None:
            raise JobError("a .txt input has one column, text; its ids are the line numbers")
        return ray.data.read_text(source, drop_empty_lines=False)
    if fmt == "parquet":
        names = _parquet_columns(path)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        with open(path, "rb") as handle:
            header = pacsv.open_csv(handle).schema.names
        names = list(header)
    else:
        names = list(ray.data.read_json(source, lines=True).schema().names)
    for field in (text_field, id_field):
        if field is not None and field not in names:
            raise JobError(f"{path.name} has no column {field!r} (it has: {', '.join(names[:20])})")
    id_column = id_field or ("id" if "id" in names else None)
    columns = [text_field] + ([id_column] if id_column and id_column != text_field else [])
    if fmt == "parquet":
        return ray.data.read_parquet(source, columns=columns)
    if fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        strings = pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()), include_columns=columns)
        return ray.data.read_csv(source, convert_options=strings)
    return ray.data.read_json(source, lines=True).select_columns(columns)


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def _write(dataset: Any, output: Path, id_field: str | None, facts: dict[str, Any]) -> int:
    """The driver gathers the actors' batches in input order into one parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    id_name = id_field or "id"
    writer = None
    rows = 0
    try:
        with open(partial, "wb") as handle:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                if id_name not in batch.column_names:  # no id column: the row number, from 1, as the daemon's job gives
                    batch = batch.add_column(0, id_name, pa.array(range(rows + 1, rows + 1 + len(batch)), type=pa.int64()))
                batch = batch.select([id_name, "embedding"])
                if writer is None:
                    metadata = {"hotswap": json.dumps(facts), **{f"hotswap.{key}": str(facts[key]) for key in ("model", "version", "fingerprint")}}
                    writer = pq.ParquetWriter(handle, batch.schema.with_metadata(metadata))
                writer.write_table(batch.replace_schema_metadata(writer.schema.metadata))
                rows += len(batch)
            if writer is None:
                raise JobError("the input has no rows to encode")
            writer.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, output)
        sync_directory(output.parent)
    finally:
        partial.unlink(missing_ok=True)
    return rows


def _explain(exc: BaseException) -> str:
    """One line out of Ray's nested error text: ours when a worker raised it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if MISMATCH in line] or [line for line in lines if "JobError: " in line]
    if ours:
        return ours[-1].split("JobError: ", 1)[-1]
    return f"the Ray job failed: {(lines[-1] if lines else type(exc).__name__)[:300]}"
