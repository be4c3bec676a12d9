"""Rerank versions on the daemon's one pipeline, with the fake backend as a "cross-encoder":
a pair's raw score is (1 + the pair text's length) x scale (one column), so every order
and every figure is known in advance."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from hotswapd.errors import IncompatibleVersions, InvalidText, WrongTask
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config

QUERY = "cats"
DOCUMENTS = ["a", "a longer one", "mid size"]
RERANK = {"task": "rerank", "dim": 1}


def raw(document: str, scale: float = 1.0) -> float:
    return (1 + len(QUERY) + 1 + len(document)) * scale  # query, separator, document


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_rerank_orders_scores_and_names_its_version(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {**RERANK, "scale": 0.1}})) as daemon, daemon.client() as client:
        answer = client.rerank(QUERY, DOCUMENTS)
        assert (answer["model"], answer["version"], answer["count"]) == ("m", "v1", 3) and answer["fingerprint"]
        assert [hit["index"] for hit in answer["results"]] == [1, 2, 0]
        assert [hit["score"] for hit in answer["results"]] == pytest.approx([sigmoid(raw(DOCUMENTS[i], 0.1)) for i in (1, 2, 0)])
        top = client.rerank(QUERY, DOCUMENTS, top_n=1, raw_scores=True)
        assert top["results"] == [{"index": 1, "score": pytest.approx(raw(DOCUMENTS[1], 0.1))}]
        again = client.rerank(QUERY, DOCUMENTS)
        assert again["cached"] == 3 and again["results"] == answer["results"]  # the cache keeps pairs, as it keeps texts


def test_a_logit_of_zero_is_a_score_not_an_unusable_vector(start: StartDaemon, tmp_path: Path) -> None:
    """Before: the pipeline refused a row of zeros, as it does an embedder's, so a pair whose
    logit was exactly 0.0 failed its whole request."""
    with start(fake_config(tmp_path, {"v1": {**RERANK, "scale": 0.0}})) as daemon, daemon.client() as client:
        answer = client.rerank(QUERY, DOCUMENTS)
    assert [hit["score"] for hit in answer["results"]] == [0.5, 0.5, 0.5]


def test_each_task_refuses_the_other_op_and_bad_pairs(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": RERANK}) + fake_config(tmp_path, {"e1": {}}, model="emb")
    with start(config) as daemon, daemon.client() as client:
        with pytest.raises(WrongTask, match="m@v1 is a rerank version: use hs rerank"):
            client.encode(["x"], "m")
        with pytest.raises(WrongTask, match="emb@e1 is an embed version: use hs encode"):
            client.rerank(QUERY, DOCUMENTS, "emb")
        with pytest.raises(InvalidText, match="document 2 is empty"):
            client.rerank(QUERY, ["a", ""], "m")
        with pytest.raises(InvalidText, match="NUL"):
            client.rerank(QUERY, ["a\x00b"], "m")
        with pytest.raises(InvalidText, match="the query is empty"):
            client.rerank(" ", ["a"], "m")
        assert client.rerank(QUERY, ["still serving"], "m")["count"] == 1


def test_a_switch_between_an_embed_and_a_rerank_version_is_refused_even_forced(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"e1": {}, "r1": RERANK})) as daemon, daemon.client() as client:
        for force in (False, True):
            with pytest.raises(IncompatibleVersions, match="m@r1 is a rerank version and e1 an embed one"):
                client.switch("m", "r1", force=force)
        assert client.encode(["x"]).version == "e1"
        assert client.history("m")[-1]["outcome"] == "failed"


def test_a_canary_of_a_rerank_version_under_traffic_fails_nothing(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {**RERANK, "scale": 0.01}, "v2": {**RERANK, "scale": 0.02}})) as daemon, daemon.client() as client:
        fakebackend.CONTROLS["v1"].delay = fakebackend.CONTROLS["v2"].delay = 0.002
        answers: list[dict] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def traffic() -> None:
            with daemon.client() as own:
                round_ = 0
                while not stop.is_set():
                    try:
                        answers.append(own.rerank(QUERY, [f"doc {round_}", "another document"], no_cache=True))
                    except BaseException as exc:  # noqa: BLE001 -- counted: the test's point
                        failures.append(exc)
                    round_ += 1

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for thread in threads:
            thread.start()
        client.switch("m", "v2", "canary", share=50.0)
        while sum(answer["version"] == "v2" for answer in answers) < 20:
            assert not failures, failures
            threading.Event().wait(0.01)
        client.switch("m", "v2")  # promoted
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == [] and {answer["version"] for answer in answers} == {"v1", "v2"}
    for answer in answers:  # each scored wholly by the version it names
        scale = 0.01 if answer["version"] == "v1" else 0.02
        first = answer["results"][0]
        assert first["score"] == pytest.approx(sigmoid(raw("another document", scale)))


def test_two_stage_search_reranks_the_corpus_candidates_and_names_both_versions(start: StartDaemon, tmp_path: Path) -> None:
    from tests.core.test_corpus import build_corpus, sentences, write_jsonl

    texts = sentences(300, seed=4)
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    config = fake_config(tmp_path, {"v1": {"dim": 16, "embeddings_path": str(tmp_path / "corpus")}}) + fake_config(tmp_path, {"r1": {**RERANK, "scale": 0.01}}, model="rr")
    with start(config) as daemon, daemon.client() as client:
        build_corpus(client, "m@v1", source, tmp_path / "corpus")
        client.evict("m")
        first = client.search("bank rates", "m", k=50)["results"][0]
        answer = client.search_reranked("bank rates", "m", rerank="rr", k=5, candidates=50)
        assert answer["reranker"]["model"] == "rr" and answer["reranker"]["version"] == "r1" and answer["version"] == "v1"
        hits = answer["results"][0]
        # The reranker (longer pair, higher score) picks the 5 longest of the 50 candidates.
        expected = sorted(first, key=lambda hit: (-len(hit["text"]), first.index(hit)))[:5]
        assert [hit["row"] for hit in hits] == [hit["row"] for hit in expected]
        assert all(hit["score"] == pytest.approx(sigmoid((1 + len("bank rates") + 1 + len(hit["text"])) * 0.01)) for hit in hits)
        assert {hit["retrieval_score"] for hit in hits} <= {hit["score"] for hit in first}


def test_the_http_search_reranks_in_two_stages_and_rerank_shapes_refuse_bad_bodies(start: StartDaemon, tmp_path: Path) -> None:
    import httpx

    from tests.core.test_corpus import build_corpus, sentences, write_jsonl
    from tests.core.test_http import serving

    texts = sentences(100, seed=6)
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    extra = '[http]\nlisten = "127.0.0.1:0"\n'
    config = fake_config(tmp_path, {"v1": {"dim": 16, "embeddings_path": str(tmp_path / "corpus")}}, extra=extra) + fake_config(tmp_path, {"r1": {**RERANK, "scale": 0.01}}, model="rr")
    with serving(start, config) as (daemon, url), daemon.client() as client:
        build_corpus(client, "m@v1", source, tmp_path / "corpus")
        client.evict("m")
        expected = client.search_reranked("bank rates", "m", rerank="rr", k=3, candidates=20)
        answer = httpx.post(f"{url}/v1/search", json={"model": "m", "query": "bank rates", "k": 3, "rerank": "rr", "candidates": 20}, timeout=30)
        assert answer.status_code == 200 and answer.headers["X-Hotswap-Reranker"] == "rr@r1" and answer.json()["reranker"] == "rr@r1"
        assert [hit["row"] for hit in answer.json()["data"][0]["results"]] == [hit["row"] for hit in expected["results"][0]]
        bad = [
            ("/v1/rerank", {"model": "rr", "query": "", "documents": ["a"]}, "query"),
            ("/v1/rerank", {"model": "rr", "query": "q", "documents": []}, "documents"),
            ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a", ""]}, "documents"),
            ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
            ("/rerank", {"query": "q", "texts": ["a\u0000b"]}, "texts"),
            ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, "raw_scores"),
            ("/tokenize", {"inputs": []}, "inputs"),
        ]
        for path, body, param in bad:
            refused = httpx.post(f"{url}{path}", json=body, timeout=30)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, (path, refused.text)
        wrong = httpx.post(f"{url}/v1/rerank", json={"model": "m", "query": "q", "documents": ["a"]}, timeout=30)
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_task"
        assert httpx.post(f"{url}/rerank", json={"model": "rr", "query": "q", "texts": ["a", "bb"]}, timeout=30).json()[0]["index"] == 1


def test_a_rerank_whose_client_leaves_is_withdrawn(start: StartDaemon, tmp_path: Path) -> None:
    """Found in review: the client withdrew encodes and searches it no longer wanted, not reranks."""
    with start(fake_config(tmp_path, {"v1": RERANK})) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        leaving = daemon.client()
        leaving.send("rerank", options={"deadline_ms": 60_000}, payload=[QUERY.encode(), b"a", b"b"])
        assert control.entered.wait(5)
        leaving.close()  # withdraws what it still waits for
        deadline = time.monotonic() + 5
        while daemon.daemon._router.withdrawals < 1:  # noqa: SLF001 -- the cancel has reached the request
            assert time.monotonic() < deadline, "the rerank was never withdrawn"
            time.sleep(0.01)
        gate.set()
