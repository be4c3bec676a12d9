"""`hs encode --ray` (issue 16, part 3) against a real daemon and a real local Ray: the same
vectors as the daemon, ids aligned, the daemon's fingerprint in the output, and a worker
whose files differ from the daemon's refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_hs
from tests.daemons import start_daemon, wait_ready, write_config
from tests.tinymodel import build_tiny_model

pytestmark = pytest.mark.slow


def test_a_ray_job_gives_the_daemons_vectors_and_refuses_other_files(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    config = write_config(
        tmp_path / "config.toml",
        f'[cache]\nmax_mb = 0\n[models.tiny]\nactive = "v1"\n[models.tiny.versions.v1]\nbackend = "sentence-transformers"\nsource = "{model}"\npreload = true\n',
    )
    rng = np.random.default_rng(4)
    words = ["market", "shares", "goal", "minister", "film", "season", "election", "profit", "record", "court"]
    records = [{"doc": f"n{i}", "body": " ".join(rng.choice(words, size=int(rng.integers(1, 60))))} for i in range(800)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    daemon = start_daemon(config, tmp_path, wait=300)
    try:
        with daemon.client(timeout=300) as client:
            wait_ready(client, wait=300)
            expected = client.encode([r["body"] for r in records], "tiny@v1")
        output = tmp_path / "out.parquet"
        done = run_hs("encode", "-i", str(source), "--field", "body", "--id-field", "doc", "-o", str(output), "--ray", "--actors", "2",
                      endpoint=daemon.endpoint, timeout=600)
        assert done.returncode == 0, done.stderr
        assert b"encoded 800 rows" in done.stderr and b"on a local Ray (2 actors)" in done.stderr
        table = pq.read_table(output)
        assert table.column("doc").to_pylist() == [r["doc"] for r in records]
        vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(len(table), -1)
        cosines = (vectors * expected.embeddings).sum(axis=1)
        assert cosines.min() >= 0.9999
        metadata = table.schema.metadata
        assert metadata[b"hotswap.fingerprint"].decode() == expected.fingerprint and metadata[b"hotswap.version"] == b"v1"

        # The files change under the daemon (which still serves what it loaded): a worker
        # loads the new files, its fingerprint differs, and the job is refused.
        other = build_tiny_model(tmp_path / "other", seed=7)
        shutil.copy(other / "model.safetensors", model / "model.safetensors")
        refused = run_hs("encode", "-i", str(source), "--field", "body", "-o", str(tmp_path / "bad.parquet"), "--ray", endpoint=daemon.endpoint, timeout=600)
        assert refused.returncode == 1
        line = refused.stderr.decode().strip().splitlines()[-1]
        assert line.startswith("hs: error: tiny@v1 on this worker is not the daemon's: fingerprint") and expected.fingerprint in line, refused.stderr
        assert not (tmp_path / "bad.parquet").exists()
    finally:
        daemon.stop()
