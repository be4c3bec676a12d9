"""Version-bound corpora (issue 15): built through the daemon, searched by the version that
encoded the query, refused when they are not that version's, moved by a switch."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from hotswapd.client.connection import Client
from hotswapd.jobs.corpus_build import build
from hotswapd.corpus.files import MANIFEST, MATRIX, OFFSETS, ROWS, CorpusError, read_manifest
from hotswapd.errors import CorpusUnavailable, IncompatibleVersions
from hotswapd.files.readers import RowReader
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import InprocDaemon, fake_config

DIM = 16
WORDS = "market rates bank growth election vote football goal match film music award energy oil price court law police school health".split()
SPACES = {"v1": {"dim": DIM}, "v2": {"dim": DIM, "shift": 2}}


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + f" {i}" for i in range(count)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"doc": f"d{i}", "body": text}) + "\n" for i, text in enumerate(texts)))
    return path


def build_corpus(client: Client, spec: str, source: Path, output: Path, **kwargs: object) -> None:
    reader = RowReader(source, "jsonl", text_field="body", id_field="doc")
    build(client, spec, reader, output, input_facts={"path": str(source)}, **kwargs)  # type: ignore[arg-type]


def expected_scores(texts: list[str], query: str, version: str) -> np.ndarray:
    options = SPACES[version]
    matrix = np.stack([fakebackend.vector(t, 1.0, DIM, int(options.get("shift", 0))) for t in texts])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = fakebackend.vector(query, 1.0, DIM, int(options.get("shift", 0)))
    return matrix @ (q / np.linalg.norm(q))


@contextmanager
def with_corpora(start: StartDaemon, tmp_path: Path, texts: list[str], versions: tuple[str, ...] = ("v1", "v2"), extra: str = "", **overrides: dict[str, object]) -> Iterator[InprocDaemon]:
    """A daemon whose versions each have a corpus of ``texts`` built by themselves."""
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    options = {v: {**SPACES[v], "embeddings_path": str(tmp_path / f"corpus-{v}"), **overrides.get(v, {})} for v in SPACES}
    with start(fake_config(tmp_path, options, extra=extra)) as daemon, daemon.client() as client:
        for version in versions:
            build_corpus(client, f"m@{version}", source, tmp_path / f"corpus-{version}")
        client.evict("m")  # loaded again on next use, with the corpora now there
        yield daemon


def test_exact_search_equals_a_numpy_reference(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(500, seed=1)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        answer = client.search("bank rates market growth", "m", k=10)
        assert (answer["model"], answer["version"], answer["rows"]) == ("m", "v1", 500)
        assert answer["fingerprint"] == client.encode(["x"], "m").fingerprint
        scores = expected_scores(texts, "bank rates market growth", "v1")
        hits = answer["results"][0]
        np.testing.assert_allclose([hit["score"] for hit in hits], np.sort(scores)[::-1][:10], rtol=1e-5)
        for hit in hits:
            assert hit["id"] == f"d{hit['row']}" and hit["text"] == texts[hit["row"]]
            assert abs(scores[hit["row"]] - hit["score"]) < 1e-5
        models = {row["name"]: row for row in client.models()}
        corpus = next(item for item in models["m"]["version_detail"] if item["version"] == "v1")["corpus"]
        assert corpus["rows"] == 500 and corpus["dim"] == DIM and corpus["index"] == "exact"


def test_during_a_split_each_query_meets_its_own_versions_corpus(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(300, seed=2)
    queries = sentences(400, seed=3)
    with with_corpora(start, tmp_path, texts) as daemon, daemon.client() as client:
        for version in ("v1", "v2"):  # the manifest names the weights of the version that built it, active or not
            assert read_manifest(tmp_path / f"corpus-{version}").weights == client.preload(f"m@{version}")["weights"] is not None
        client.switch("m", "v2", "split", share=50)
        mismatches, seen = 0, {"v1": 0, "v2": 0}
        for query in queries:
            answer = client.search(query, "m", k=3)
            seen[answer["version"]] += 1
            expected = expected_scores(texts, query, answer["version"])
            got = answer["results"][0]
            if any(abs(expected[hit["row"]] - hit["score"]) > 1e-5 for hit in got) or abs(got[0]["score"] - expected.max()) > 1e-5:
                mismatches += 1
        assert mismatches == 0
        assert seen["v1"] > 120 and seen["v2"] > 120, seen  # a 50% split of 400: ~200 each


def test_a_corpus_of_other_weights_is_refused_unless_accepted(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(50, seed=4)
    foreign = {"v2": {"embeddings_path": str(tmp_path / "corpus-v1")}}
    with with_corpora(start, tmp_path, texts, ("v1",), **foreign) as daemon, daemon.client() as client:
        with pytest.raises(CorpusUnavailable, match=r"built by m@v1 .*not comparable"):
            client.search("bank", "m@v2")
        detail = next(item for item in client.models()[0]["version_detail"] if item["version"] == "v2")
        assert "built by m@v1" in detail["corpus"]["problem"]
    accepted = {"v2": {"embeddings_path": str(tmp_path / "corpus-v1"), "accept_foreign_corpus": True}}
    with start(fake_config(tmp_path, {v: {**SPACES[v], **accepted.get(v, {})} for v in SPACES})) as daemon, daemon.client() as client:
        assert client.search("bank", "m@v2")["rows"] == 50
        events = [entry["event"] for entry in client.history("m", all_events=True)]
        assert "corpus_foreign_accepted" in events


def test_a_switch_moves_the_corpus_and_refuses_a_version_without_one(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(80, seed=5)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        # v2 is another embedding space and its corpus is not built: refused, with the reason.
        with pytest.raises(IncompatibleVersions, match=r"m@v2 has no corpus to search .*does not exist"):
            client.switch("m", "v2")
        build_corpus(client, "m@v2", tmp_path / "docs.jsonl", tmp_path / "corpus-v2")
        client.evict("m")
        # Both have their own corpus: the index moves with the version, no shared space needed.
        assert client.switch("m", "v2")["outcome"] == "done"
        after = client.search("court law", "m")
        assert after["version"] == "v2" and abs(after["results"][0][0]["score"] - expected_scores(texts, "court law", "v2").max()) < 1e-5
        client.rollback("m")
        assert client.search("court law", "m")["version"] == "v1"


def test_a_half_built_or_damaged_corpus_is_refused_with_the_reason(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(40, seed=6)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        corpus = tmp_path / "corpus-v1"
        cases = [
            (lambda: (corpus / MANIFEST).rename(corpus / "m.bak"), "no manifest.json: not a finished corpus"),
            (lambda: (corpus / "m.bak").rename(corpus / MANIFEST), None),
            (lambda: _truncate(corpus / MATRIX, 100), "short of its 40 x 16 float32 rows"),
        ]
        for damage, reason in cases:
            damage()
            client.evict("m")
            if reason is None:
                assert client.search("oil", "m")["rows"] == 40
            else:
                with pytest.raises(CorpusUnavailable, match=reason):
                    client.search("oil", "m")
                assert client.encode(["the version still encodes"], "m").count == 1


def _truncate(path: Path, drop: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - drop)


def test_a_bare_npy_matrix_is_searched_by_row_number(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(30, seed=7)
    matrix = np.stack([fakebackend.vector(t, 1.0, DIM) for t in texts])
    np.save(tmp_path / "bare.npy", (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32))
    with start(fake_config(tmp_path, {"v1": {"dim": DIM, "embeddings_path": str(tmp_path / "bare.npy")}})) as daemon, daemon.client() as client:
        hit = client.search(texts[7], "m", k=1)["results"][0][0]
        assert hit["id"] == hit["row"] and hit["text"] is None and abs(hit["score"] - 1.0) < 1e-5


def test_a_build_refuses_to_overwrite_and_needs_a_version(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(20, seed=8)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        with pytest.raises(CorpusError, match="already holds a finished corpus"):
            build_corpus(client, "m@v1", tmp_path / "docs.jsonl", tmp_path / "corpus-v1")
        with pytest.raises(CorpusError, match="name the version"):
            build_corpus(client, "m", tmp_path / "docs.jsonl", tmp_path / "other")
        offsets = np.load(tmp_path / "corpus-v1" / OFFSETS)
        assert offsets[0] == 0 and offsets[-1] == (tmp_path / "corpus-v1" / ROWS).stat().st_size and len(offsets) == 21


def test_http_search_is_scored_by_the_version_it_names(start: StartDaemon, tmp_path: Path) -> None:
    import httpx

    texts = sentences(60, seed=12)
    with with_corpora(start, tmp_path, texts, extra='[http]\nlisten = "127.0.0.1:0"\n') as daemon:
        assert daemon.daemon.http is not None
        with httpx.Client(base_url=daemon.daemon.http.url) as web:
            answer = web.post("/v1/search", json={"model": "m@v2", "query": ["court law", "oil price"], "k": 4})
            assert answer.status_code == 200 and answer.headers["x-hotswap-version"] == "v2"
            body = answer.json()
            assert body["model"] == "m@v2" and [item["index"] for item in body["data"]] == [0, 1]
            for item, query in zip(body["data"], ["court law", "oil price"], strict=True):
                expected = expected_scores(texts, query, "v2")
                assert abs(item["results"][0]["score"] - expected.max()) < 1e-5 and len(item["results"]) == 4
            for bad, param in (({"query": ""}, "query"), ({"query": "x", "k": 0}, "k"), ({"query": "x", "k": True}, "k"), ({"query": ["x"] * 65}, "query")):
                refused = web.post("/v1/search", json={"model": "m", **bad})
                assert refused.status_code == 400 and refused.json()["error"]["param"] == param


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_bridge_serves_the_old_corpus_until_the_new_one_is_built(start: StartDaemon, tmp_path: Path) -> None:
    """v2 is another space (a permutation of v1's components); fitted on a sample, the map
    finds v1-corpus neighbours for v2's queries, the reply says a bridge was used, and a
    bridge below its floor or fitted for other weights is refused."""
    from hotswapd.corpus.bridge import BridgeManifest
    from hotswapd.jobs.bridge_fit import fit_bridge
    from tests.conftest import run_hs

    texts = sentences(200, seed=14)
    bridge = {"v2": {"bridge_path": str(tmp_path / "bridge")}}
    with with_corpora(start, tmp_path, texts, ("v1",), **bridge) as daemon, daemon.client() as client:
        with pytest.raises(CorpusError, match="needs at least 50"):
            fit_bridge(client, "m@v2", "v1", sentences(10, seed=15), tmp_path / "small")
        (tmp_path / "sample.txt").write_text("\n".join(sentences(400, seed=15)) + "\n")
        fitted = run_hs("index", "bridge", "m@v2", "--to-corpus-of", "v1", "--sample", str(tmp_path / "sample.txt"), "-o", str(tmp_path / "bridge"), endpoint=daemon.endpoint)
        assert fitted.returncode == 0 and b"(orthogonal map): recall@10 1.000 on 80 held-out queries" in fitted.stderr, fitted.stderr
        done = BridgeManifest.model_validate_json((tmp_path / "bridge" / "manifest.json").read_bytes())
        assert done.kind == "orthogonal" and done.recall_at_10 >= 0.95 and done.held_out == 80
        client.evict("m")
        answer = client.search("court law police", "m@v2", k=5)
        assert answer["bridge"]["to"] == "m@v1" and answer["bridge"]["recall_at_10"] == done.recall_at_10
        expected = expected_scores(texts, "court law police", "v1")  # v1's neighbours, found from a v2 query
        assert abs(answer["results"][0][0]["score"] - expected.max()) < 1e-4
        # With the bridge, the switch to v2 keeps searches working: not refused.
        assert client.switch("m", "v2")["outcome"] == "done"
        client.rollback("m")
        manifest = json.loads((tmp_path / "bridge" / "manifest.json").read_text())
        (tmp_path / "bridge" / "manifest.json").write_text(json.dumps({**manifest, "recall_at_10": 0.5}))
        client.evict("m")
        with pytest.raises(CorpusUnavailable, match=r"recall@10 0.500 .*bridge_min_recall is 0.9"):
            client.search("court", "m@v2")
        (tmp_path / "bridge" / "manifest.json").write_text(json.dumps({**manifest, "from_fingerprint": "0" * 16}))
        client.evict("m")
        with pytest.raises(CorpusUnavailable, match="was fitted for fingerprint 0000000000000000"):
            client.search("court", "m@v2")


def test_an_approximate_index_finds_what_exact_search_finds(start: StartDaemon, tmp_path: Path) -> None:
    """usearch HNSW beside the matrix: recall@10 >= 0.95 against exact search, exact scores
    for what it finds, and a damaged index is refused (the corpus searched exactly)."""
    from hotswapd.corpus.ann import ANN, build_ann

    texts = sentences(3000, seed=16)
    with with_corpora(start, tmp_path, texts, ("v1",)) as daemon, daemon.client() as client:
        facts = build_ann(tmp_path / "corpus-v1")
        assert facts.recall_at_10 >= 0.95 and facts.rows == 3000
        client.evict("m")
        found = 0
        for query in sentences(100, seed=17):
            approximate = client.search(query, "m", k=10)
            exact = client.search(query, "m", k=10, exact=True)
            assert approximate["index"].startswith("ann (usearch") and exact["index"] == "exact"
            scores = expected_scores(texts, query, "v1")
            assert all(abs(scores[hit["row"]] - hit["score"]) < 1e-5 for hit in approximate["results"][0])
            found += len({h["row"] for h in approximate["results"][0]} & {h["row"] for h in exact["results"][0]})
        assert found / 1000 >= 0.95
        with open(tmp_path / "corpus-v1" / ANN, "r+b") as handle:
            handle.seek(200)
            handle.write(b"\xff" * 64)
        client.evict("m")
        damaged = client.search("court", "m", k=3)
        assert damaged["index"] == "exact" and damaged["rows"] == 3000
        detail = next(item for item in client.models()[0]["version_detail"] if item["version"] == "v1")
        assert "damaged" in detail["corpus"]["ann_problem"]


def test_a_search_takes_a_prompt_by_name(start: StartDaemon, tmp_path: Path) -> None:
    from hotswapd.errors import RequestError
    from tests.conftest import run_hs

    with with_corpora(start, tmp_path, sentences(20, seed=3), ("v1",)) as daemon, daemon.client() as client:
        with pytest.raises(RequestError, match=r"no prompt 'query' \(its prompts: none\)"):
            client.search("bank rates", "m", prompt="query")
        done = run_hs("search", "bank rates", "-m", "m", "--prompt", "query", endpoint=daemon.endpoint)
        assert done.returncode != 0 and b"no prompt 'query'" in done.stderr
        assert client.search("bank rates", "m")["rows"] == 20
