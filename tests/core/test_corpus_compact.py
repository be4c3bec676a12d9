"""A corpus's compact copies (binary, int8): searched first, rescored with the float rows,
they return what the float search returns, in a fraction of the memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotswapd.corpus.compact_index import COMPACT, INT8_RANGES, write_compact
from hotswapd.corpus.files import FORMAT, MATRIX, OFFSETS, ROWS, CorpusError, Manifest, row_line, write_manifest
from hotswapd.corpus.store import open_corpus
from hotswapd.wire.compact import quantize

DIM = 128


def clustered_corpus(where: Path, rows: int = 4000, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Rows around 40 topics (as sentence vectors are), normalised, written as a finished corpus."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    matrix = centres[rng.integers(0, 40, rows)] + 0.6 * rng.standard_normal((rows, DIM))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype("<f4")
    where.mkdir()
    np.save(where / MATRIX, matrix)
    lines = [row_line(f"r{i}", f"text {i}") for i in range(rows)]
    (where / ROWS).write_bytes(b"".join(lines))
    np.save(where / OFFSETS, np.cumsum([0, *map(len, lines)]).astype("<i8"))
    write_manifest(where, Manifest(format=FORMAT, model="m", version="v1", fingerprint="f", rows=rows, dim=DIM, texts=True))
    return where, matrix


def queries(matrix: np.ndarray, count: int = 60) -> np.ndarray:
    rng = np.random.default_rng(9)
    picked = matrix[rng.integers(0, len(matrix), count)] + 0.3 * rng.standard_normal((count, DIM)).astype("<f4") / np.sqrt(DIM)
    return (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype("<f4")


def test_the_compact_copies_are_quantize_embeddings_of_the_float_rows(tmp_path: Path) -> None:
    where, matrix = clustered_corpus(tmp_path / "c", rows=300)
    write_compact(where, "binary")
    write_compact(where, "int8")
    assert np.array_equal(np.load(where / COMPACT["binary"]), quantize(matrix, "ubinary"))
    ranges = np.load(where / INT8_RANGES)
    assert np.array_equal(ranges, np.vstack((matrix.min(axis=0), matrix.max(axis=0))))  # the corpus's own ranges
    assert np.array_equal(np.load(where / COMPACT["int8"]), quantize(matrix, "int8", ranges))


@pytest.mark.parametrize("precision", ["binary", "int8"])
def test_compact_search_with_rescoring_finds_what_float_search_finds(tmp_path: Path, precision: str) -> None:
    where, matrix = clustered_corpus(tmp_path / "c")
    write_compact(where, precision)
    corpus = open_corpus(where)
    found = exact = 0
    for query in queries(matrix):
        fast = {hit.row for hit in corpus.search(query, 10, precision=precision)}
        truth = {hit.row for hit in corpus.search(query, 10, exact=True)}
        found, exact = found + len(fast & truth), exact + len(truth)
    assert found / exact >= 0.95, found / exact
    hits = corpus.search(queries(matrix)[0], 10, precision=precision)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(abs(hit.score - float(matrix[hit.row] @ queries(matrix)[0])) < 1e-5 for hit in hits)  # rescored: float cosines
    described = corpus.describe()
    assert described["compact"] == [precision]
    share = 32 if precision == "binary" else 4
    assert corpus.memory_bytes == matrix.nbytes // share + (len(matrix) + 1) * 8  # the compact copy and the offsets


def test_a_damaged_compact_copy_is_refused_and_the_float_rows_serve(tmp_path: Path) -> None:
    where, matrix = clustered_corpus(tmp_path / "c", rows=200)
    write_compact(where, "binary")
    data = (where / COMPACT["binary"]).read_bytes()
    (where / COMPACT["binary"]).write_bytes(data[: len(data) // 2])  # cut short
    corpus = open_corpus(where)
    assert corpus.compact_problem and "binary" not in corpus.describe()["compact"]
    assert len(corpus.search(matrix[0], 5)) == 5 and corpus.search(matrix[0], 1)[0].row == 0
    with pytest.raises(CorpusError, match="has no usable binary copy: .*embeddings.ubinary.npy"):
        corpus.search(matrix[0], 5, precision="binary")


def test_the_daemon_searches_a_compact_copy_added_to_a_served_corpus(start: object, tmp_path: Path) -> None:
    from tests.core.test_corpus import build_corpus, sentences, write_jsonl
    from tests.inproc import fake_config

    texts = sentences(200, seed=3)
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    with start(fake_config(tmp_path, {"v1": {"dim": 16, "embeddings_path": str(tmp_path / "corpus")}})) as daemon, daemon.client() as client:  # type: ignore[operator]
        build_corpus(client, "m@v1", source, tmp_path / "corpus")
        client.evict("m")
        before = client.search("bank rates", "m", k=5)
        assert before["index"] == "exact"
        write_compact(tmp_path / "corpus", "int8")  # `hs index compact`, beside the running daemon
        after = client.search("bank rates", "m", k=5)
        assert after["index"] == "int8+rescore"  # the file that appeared is picked up at the next search
        assert client.search("bank rates", "m", k=5, precision="float")["index"] == "exact"
        models = {row["name"]: row for row in client.models()}
        assert models["m"]["version_detail"][0]["corpus"]["compact"] == ["int8"]
        from hotswapd.errors import CorpusUnavailable

        with pytest.raises(CorpusUnavailable, match="has no usable binary copy"):
            client.search("bank rates", "m", k=5, precision="binary")
