"""Damaged and hostile corpora, indexes, bridges and build records: refused or worked
around, never the end of a version (each test failed before its fix; issue 15)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from hotswapd.jobs.corpus_build import build
from hotswapd.corpus.files import MATRIX, ROWS, CorpusError, npy_header
from hotswapd.errors import CorpusUnavailable, InvalidText
from hotswapd.files.readers import InputError, RowReader
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM, SPACES, build_corpus, sentences, with_corpora, write_jsonl
from tests.inproc import fake_config


def test_unusable_corpus_files_never_stop_the_version(start: StartDaemon, tmp_path: Path) -> None:
    """A symlink loop, a FIFO, a huge bridge map header, NaN rows or ids: the version loads
    once, encodes, and a search answers corpus_unavailable with the reason."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    os.mkfifo(tmp_path / "fifo-corpus")
    nan = np.ones((5, DIM), dtype=np.float32)
    nan[2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    bridge = tmp_path / "bridge"
    bridge.mkdir()
    (bridge / "map.npy").write_bytes(npy_header((10**7, 10**7), "<f4"))
    (bridge / "manifest.json").write_text(json.dumps({
        "format": "hotswap-bridge/1", "model": "m", "from_version": "v4", "from_fingerprint": "x", "to_version": "v1", "to_fingerprint": "y",
        "corpus": str(tmp_path), "kind": "orthogonal", "from_dim": 10**7, "to_dim": 10**7, "recall_at_10": 1.0, "fitted_on": 1, "held_out": 1,
    }))
    versions = {
        "v1": {"dim": DIM, "embeddings_path": str(tmp_path / "loop")},
        "v2": {"dim": DIM, "embeddings_path": str(tmp_path / "fifo-corpus")},
        "v3": {"dim": DIM, "embeddings_path": str(tmp_path / "nan.npy")},
        "v4": {"dim": DIM, "bridge_path": str(bridge)},
        "v5": {"dim": DIM, "bridge_path": str(tmp_path / "loop")},
    }
    with start(fake_config(tmp_path, versions)) as daemon, daemon.client(timeout=20) as client:
        for version, reason in (("v1", "loop"), ("v2", ""), ("v3", "NaN or infinite"), ("v4", "bridge"), ("v5", "bridge")):
            for _ in range(3):
                assert client.encode(["still encodes"], f"m@{version}").count == 1
            if version == "v2":  # a FIFO in a corpus directory's place: refused without blocking
                continue
            with pytest.raises(CorpusUnavailable, match=reason):
                client.search("query", f"m@{version}")
            assert fakebackend.CONTROLS[version].loads == 1, version  # loaded once, not once per request
    fifo_dir = tmp_path / "fifo-dir"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "manifest.json")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM, "embeddings_path": str(fifo_dir)}})) as daemon, daemon.client(timeout=20) as client:
        with pytest.raises(CorpusUnavailable, match="not a regular file"):
            client.search("query", "m")


def test_a_nan_id_is_a_typed_error(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(20, seed=20)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        rows = tmp_path / "corpus-v1" / ROWS
        lines = rows.read_bytes().split(b"\n")
        best = client.search(texts[4], "m", k=1)["results"][0][0]["row"]
        lines[best] = b'{"id":NaN}'.ljust(len(lines[best]))
        rows.write_bytes(b"\n".join(lines))
        client.evict("m")
        with pytest.raises(CorpusUnavailable, match=f"row {best} is not a JSON object"):
            client.search(texts[4], "m", k=1)
        with pytest.raises(InvalidText, match="query 0 is empty"):
            client.search("   ", "m")


def test_builds_stopped_early_leave_nothing_in_the_way(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", sentences(30, seed=21))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": ""}\n')
    with start(fake_config(tmp_path, {"v1": SPACES["v1"]})) as daemon, daemon.client() as client:
        with pytest.raises(InputError, match="the text is empty"):
            build(client, "m@v1", RowReader(bad, "jsonl"), tmp_path / "out", input_facts={})
        assert sorted(os.listdir(tmp_path / "out")) == []
        (tmp_path / "out" / MATRIX).write_bytes(b"half")  # what a kill before the first checkpoint leaves
        (tmp_path / "out" / ROWS).write_bytes(b'{"id": 1}')
        build_corpus(client, "m@v1", source, tmp_path / "out", resume=True)
        assert client.encode(["x"], "m").count == 1
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(CorpusError, match="a-file"):
            build_corpus(client, "m@v1", source, tmp_path / "a-file")
        unrelated = tmp_path / "mine"
        unrelated.mkdir()
        (unrelated / MATRIX).write_bytes(b"someone else's")
        (unrelated / "notes.txt").write_text("keep me")
        with pytest.raises(CorpusError, match="not empty"):
            build_corpus(client, "m@v1", source, unrelated)
        assert (unrelated / MATRIX).read_bytes() == b"someone else's"


def test_readers_take_parquet_ids_byte_order_marks_and_refuse_lone_surrogates(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "p1", "text": "a"}, {"id": "p2", "text": "b"}]), tmp_path / "a.parquet")
    assert [row.id for row in RowReader(tmp_path / "a.parquet", "parquet")] == ["p1", "p2"]
    (tmp_path / "a.csv").write_bytes("\ufefftext,id\nhello,c1\n".encode())
    assert [(row.id, row.text) for row in RowReader(tmp_path / "a.csv", "csv")] == [("c1", "hello")]
    (tmp_path / "a.txt").write_bytes("\ufefffirst\nsecond\n".encode())
    assert [row.text for row in RowReader(tmp_path / "a.txt", "txt")] == ["first", "second"]
    (tmp_path / "s.jsonl").write_text('{"id": "\\udc00", "text": "x"}\n')
    with pytest.raises(InputError, match="lone surrogate"):
        list(RowReader(tmp_path / "s.jsonl", "jsonl"))


def test_a_damaged_ann_index_falls_back_to_exact_search(start: StartDaemon, tmp_path: Path) -> None:
    from hotswapd.corpus.ann import ANN, ANN_FACTS, build_ann

    texts = sentences(200, seed=22)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        corpus = tmp_path / "corpus-v1"
        build_ann(corpus)
        (corpus / ANN).write_bytes(os.urandom(4096))  # garbage, with a digest that matches it
        facts = json.loads((corpus / ANN_FACTS).read_text())
        facts["file_sha256"] = hashlib.sha256((corpus / ANN).read_bytes()).hexdigest()
        (corpus / ANN_FACTS).write_text(json.dumps(facts))
        client.evict("m")
        answer = client.search(texts[3], "m", k=1)
        assert answer["index"] == "exact" and answer["results"][0][0]["row"] == 3


def test_a_bridge_needs_distinct_sample_texts(start: StartDaemon, tmp_path: Path) -> None:
    from hotswapd.jobs.bridge_fit import fit_bridge

    with with_corpora(start, tmp_path, sentences(60, seed=23), ("v1",)) as daemon, daemon.client() as client:
        with pytest.raises(CorpusError, match="1 distinct texts"):
            fit_bridge(client, "m@v2", "v1", ["the same text"] * 60, tmp_path / "bridge")


@pytest.mark.parametrize("record", ["[" * 100_000, '{"rows": "x"}', "null"])
def test_a_damaged_progress_record_is_refused_not_trusted(start: StartDaemon, tmp_path: Path, record: str) -> None:
    from hotswapd.corpus.files import PROGRESS

    source = write_jsonl(tmp_path / "docs.jsonl", sentences(10, seed=24))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / PROGRESS).write_text(record)
    with start(fake_config(tmp_path, {"v1": SPACES["v1"]})) as daemon, daemon.client() as client:
        with pytest.raises(CorpusError, match="is unreadable"):
            build_corpus(client, "m@v1", source, tmp_path / "out", resume=True)
