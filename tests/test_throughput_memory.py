"""Dynamic batching, the embedding cache, the memory budget and ttl, on real daemons."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.errors import ModelLoadError
from tests.daemons import RunningDaemon, serving, start_daemon, wait_for, write_config

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

CLIENTS = 16
CACHE_MB = 0.05


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("throughput")
    v1, v2 = tiny_models["v1"], tiny_models["v2"]
    config = write_config(
        workdir / "config.toml",
        f"""
[cache]
max_mb = {CACHE_MB}

[memory]
max_gb = 1.0

[models.crowd]
active = "v1"
[models.crowd.versions.v1]
source = "{v1}"
max_wait_ms = 50
max_batch_size = 64
preload = true

[models.switchy]
active = "v1"
[models.switchy.versions.v1]
source = "{v1}"
ram_gb = 0.01
[models.switchy.versions.v2]
source = "{v2}"
ram_gb = 0.01

[models.mem]
active = "p"
[models.mem.versions.p]
source = "{v1}"
ram_gb = 0.4
pinned = true
[models.mem.versions.x]
source = "{v2}"
ram_gb = 0.4
[models.mem.versions.y]
source = "{v1}"
ram_gb = 0.4
max_seq_length = 64

[models.ephemeral]
active = "v1"
ttl = 0.5
[models.ephemeral.versions.v1]
source = "{v1}"
ram_gb = 0.01
""",
    )
    with serving(config, workdir) as daemon:
        yield daemon


@pytest.fixture()
def client(daemon: RunningDaemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


def histogram(exposition: str, name: str, model: str) -> dict[str, float]:
    """``{le: cumulative count}`` of one histogram for one model, from the text exposition."""
    pattern = re.compile(rf'^{name}_bucket\{{le="([^"]+)",model="{model}",version="[^"]+"\}} (\S+)$', re.M)
    return {le: float(count) for le, count in pattern.findall(exposition)}


def test_concurrent_clients_are_merged_and_each_gets_its_own_vectors(client: Client, daemon: RunningDaemon) -> None:
    texts = {worker: [f"client {worker} says {i}" for i in range(12)] for worker in range(CLIENTS)}
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)

    def run(worker: int) -> None:
        try:
            with daemon.client() as own:
                barrier.wait()
                results[worker] = [own.encode([text], "crowd").embeddings[0].copy() for text in texts[worker]]
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    for worker, vectors in results.items():
        expected = client.encode(texts[worker], "crowd").embeddings
        np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-5)
    merged = histogram(client.metrics(), "hotswapd_batch_requests", "crowd")
    assert merged["+Inf"] > 0 and merged["1.0"] < merged["+Inf"], merged  # some batches held several requests
    assert merged["+Inf"] < CLIENTS * 12  # fewer forward passes than requests


def test_a_request_over_the_limits_is_split_and_reassembled_in_order(client: Client) -> None:
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(300)]
    one_by_one = np.stack([client.encode([text], "crowd").embeddings[0] for text in texts[:20]])
    before = histogram(client.metrics(), "hotswapd_batch_texts", "crowd")
    got = client.encode(texts, "crowd").embeddings
    after = histogram(client.metrics(), "hotswapd_batch_texts", "crowd")
    np.testing.assert_allclose(got[:20], one_by_one, atol=1e-5)
    assert got.shape[0] == 300
    new_batches = after["+Inf"] - before.get("+Inf", 0)
    assert new_batches >= 5  # 300 texts at most 64 a batch
    assert after["64.0"] - before.get("64.0", 0) == new_batches  # none bigger than max_batch_size


def test_a_repeated_text_comes_from_the_cache(client: Client) -> None:
    first = client.encode(["cache me", "and me"], "switchy")
    hits_before = client.status()["cache"]["hits"]
    again = client.encode(["cache me", "new text", "and me"], "switchy")
    assert (first.cached, again.cached) == (0, 2)
    assert client.status()["cache"]["hits"] - hits_before == 2
    np.testing.assert_array_equal(again.embeddings[[0, 2]], first.embeddings)


def test_a_switch_never_serves_a_vector_cached_for_the_other_version(client: Client) -> None:
    on_v1 = client.encode(["switch-proof"], "switchy@v1").embeddings.copy()
    on_v2_reference = client.encode(["switch-proof"], "switchy@v2")  # fills v2's own entry
    client.switch("switchy", "v2")
    try:
        served = client.encode(["switch-proof"], "switchy")
        assert served.version == "v2"
        np.testing.assert_array_equal(served.embeddings, on_v2_reference.embeddings)
        assert not np.allclose(served.embeddings, on_v1)
    finally:
        client.switch("switchy", "v1")


def test_the_cache_stays_within_its_byte_bound(client: Client) -> None:
    client.encode([f"filler {i}" for i in range(1000)], "switchy")
    cache = client.status()["cache"]
    assert cache["max_bytes"] == int(CACHE_MB * 2**20)
    assert 0 < cache["bytes"] <= cache["max_bytes"] and cache["evictions"] > 0


def evicted(client: Client) -> dict[str, str]:
    return {f"{item['model']}@{item['version']}": item["reason"] for item in client.status()["evicted"]}


def test_the_budget_evicts_by_lru_but_never_a_pinned_or_busy_version(client: Client, daemon: RunningDaemon) -> None:
    client.preload("mem@p")
    client.preload("mem@x")
    client.preload("mem@y")  # 3 x 0.4 GB > 1 GB: x goes (p is pinned, though least recently used)
    loaded = client.status()["loaded"]
    assert "mem@p" in loaded and "mem@y" in loaded and "mem@x" not in loaded
    assert evicted(client)["mem@x"] == "memory budget (lru): made room for mem@y"

    long_texts = [f"passage {i} " + "lorem ipsum dolor " * 20 for i in range(4000)]

    def hold_y() -> None:
        with daemon.client() as own:
            own.encode(long_texts, "mem@y", timeout=900)  # a long deadline: a loaded machine's admission must not refuse it

    busy = threading.Thread(target=hold_y)
    busy.start()
    try:
        wait_for(client.status, lambda s: s["in_flight"] >= 1, timeout=10)
        with pytest.raises(ModelLoadError, match=r"mem@x does not fit within memory.max_gb = 1.0: .*mem@p 410 MiB \(pinned\).*mem@y 410 MiB \(in use\)"):
            client.preload("mem@x")
    finally:
        busy.join()
    assert "mem@y" in client.status()["loaded"]


def test_ttl_unloads_an_unused_version(client: Client) -> None:
    client.encode(["brief"], "ephemeral")
    wait_for(client.status, lambda s: "ephemeral@v1" not in s["loaded"], timeout=10)
    assert evicted(client)["ephemeral@v1"] == "ttl: unused for 0.5 s"
    assert client.encode(["back again"], "ephemeral").embeddings.shape == (1, 32)  # lazy reload


def test_the_persistent_cache_survives_a_restart(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        f'[cache]\nmax_mb = 1\npersist = true\n[models.tiny]\nactive = "v1"\n[models.tiny.versions.v1]\nsource = "{tiny_model}"\n',
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    texts = ["kept across restarts", "and this one"]
    first = start_daemon(config, tmp_path, extra_env=env)
    try:
        with first.client() as client:
            before = client.encode(texts, "tiny")
            assert before.cached == 0
            vectors = before.embeddings.copy()
    finally:
        assert first.stop() == 0, first.log()
    second = start_daemon(config, tmp_path, extra_env=env)
    try:
        with second.client() as client:
            after = client.encode(texts, "tiny")
            assert after.cached == 2
            np.testing.assert_array_equal(after.embeddings, vectors)
            assert client.status()["cache"]["persistent"].endswith("embeddings.sqlite")
    finally:
        assert second.stop() == 0, second.log()


def test_policy_largest_evicts_the_biggest_idle_version_first() -> None:
    from hotswapd.config.schema import MemoryConfig, VersionConfig
    from hotswapd.core.memory import victims
    from hotswapd.pipeline.loaded import LoadedVersion

    def loaded(version: str, mib: int, last_used: float, pinned: bool = False) -> LoadedVersion:
        spec = VersionConfig(source="/models/x", pinned=pinned)
        return LoadedVersion("m", version, spec, None, "f", 0.0, 0.0, mib * 2**20, last_used=last_used)  # type: ignore[arg-type]

    small_old, big_new, huge_pinned = loaded("small", 100, 1.0), loaded("big", 300, 5.0), loaded("huge", 900, 0.0, pinned=True)
    fleet = [small_old, big_new, huge_pinned]
    assert victims(MemoryConfig(max_gb=1, policy="largest"), fleet, 50 * 2**20, set(), "m@new") == [big_new]
    assert victims(MemoryConfig(max_gb=1, policy="lru"), fleet, 50 * 2**20, set(), "m@new") == [small_old]
    assert victims(MemoryConfig(max_gb=1, policy="largest"), fleet, 350 * 2**20, set(), "m@new") == [big_new, small_old]
    with pytest.raises(ModelLoadError, match=r"m@small 100 MiB \(in use\)"):
        victims(MemoryConfig(max_gb=1, policy="largest"), fleet, 350 * 2**20, {id(small_old)}, "m@new")
    with pytest.raises(ModelLoadError, match=r"m@new does not fit .* m@huge 900 MiB \(pinned\)"):
        victims(MemoryConfig(max_gb=1, policy="largest"), fleet, 500 * 2**20, set(), "m@new")


def test_hs_models_shows_every_loaded_version_with_its_memory(client: Client, daemon: RunningDaemon) -> None:
    from tests.conftest import run_hs

    client.preload("switchy@v1")
    client.preload("switchy@v2")
    row = next(item for item in client.models() if item["name"] == "switchy")
    detail = {item["version"]: item for item in row["loaded_detail"]}
    assert set(detail) == {"v1", "v2"} and detail["v2"]["memory_bytes"] == int(0.01 * 1024**3)
    shown = run_hs("models", endpoint=daemon.endpoint)
    assert shown.returncode == 0
    header, *lines = [line.split("\t") for line in shown.stdout.decode().splitlines()]  # piped: TSV
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    assert [row["memory"] for row in rows if row["model"] == "switchy" and row["version"] == "v2"] == ["10.2 MiB"]
