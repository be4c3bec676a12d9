"""Rerank versions on the daemon's one pipeline, with the fake backend as a "cross-encoder":
a pair's raw score is (1 + the pair text's length) x scale (one column), so every order
and every figure is known in advance."""

from __future__ import annotations

import math
import threading
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


def test_each_task_refuses_the_other_op_and_bad_pairs(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": RERANK}) + fake_config(tmp_path, {"e1": {}}, model="emb")
    with start(config) as daemon, daemon.client() as client:
        with pytest.raises(WrongTask, match="m@v1 is a rerank version: use hs rerank"):
            client.encode(["x"], "m")
        with pytest.raises(WrongTask, match="emb@e1 is a embed version: use hs encode"):
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
            with pytest.raises(IncompatibleVersions, match="m@r1 is a rerank version and e1 a embed one"):
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
