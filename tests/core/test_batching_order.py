"""A request split into pieces is split by length (issue 16: the pipe lost ~10 % to padding
when 256 sentences were cut into pieces in document order), and still answered in order.
A backend that can tokenise apart has a split request tokenised on the tokens pool and cut
by true token counts (issue 28: 90.5 % useful tokens by the estimate, 96.5 % by counts)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd.errors import DeadlineExceeded, InferenceError

from hotswapd.wire.length_order import length_key
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_pieces_are_cut_by_length_and_rows_come_back_in_order(start: StartDaemon, tmp_path: Path) -> None:
    rng = random.Random(5)
    texts = [" ".join(f"w{rng.randint(0, 99)}" for _ in range(rng.randint(1, 40))) + f" #{i}" for i in range(50)]
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        result = client.encode(texts, "m", normalize=False)
        expected = np.stack([fakebackend.vector(text, 1.0, 8) for text in texts])
        np.testing.assert_array_equal(result.embeddings, expected)
        seen = fakebackend.CONTROLS["v1"].seen
        assert sorted(seen) == sorted(texts)
        lengths = [length_key(text) for text in seen]
        assert lengths == sorted(lengths, reverse=True)  # the model saw pieces of like length, longest first


def _mixed_texts(count: int) -> list[str]:
    """Texts whose estimate (length_key) and fake token count disagree: a run of punctuation
    is one word to the fake tokenizer and many marks to the estimate."""
    rng = random.Random(7)
    texts = []
    for i in range(count):
        if i % 2:
            texts.append(",".join("p" for _ in range(rng.randint(2, 30))) + f"#{i}")  # one fake token word
        else:
            texts.append(" ".join(f"w{rng.randint(0, 99)}" for _ in range(rng.randint(1, 30))) + f" #{i}")
    return texts


def test_a_split_request_is_tokenised_off_the_inference_thread_and_cut_by_true_counts(start: StartDaemon, tmp_path: Path) -> None:
    texts = _mixed_texts(60)
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8, "tokenizes": True}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        result = client.encode(texts, "m", normalize=False)
        np.testing.assert_array_equal(result.embeddings, np.stack([fakebackend.vector(text, 1.0, 8) for text in texts]))
        control = fakebackend.CONTROLS["v1"]
        assert [(name.startswith("hotswapd-tokens"), count) for name, count in control.tokenized] == [(True, 60)]
        # The model ran on the tokens it was handed, in pieces by true count, longest first:
        # an order the estimate would not give (the test's texts make them disagree).
        counts = [count for batch in control.token_batches for count in batch]
        assert len(counts) == 60 and counts == sorted(counts, reverse=True)
        assert [length_key(text) for text in control.seen] != sorted((length_key(text) for text in control.seen), reverse=True)


def test_a_request_that_fits_one_batch_is_not_tokenised_apart(start: StartDaemon, tmp_path: Path) -> None:
    """A single text (the latency path) takes no extra hop through the tokens pool."""
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8, "tokenizes": True}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        assert client.encode(["one text"], "m").count == 1
        assert client.encode([f"text {i}" for i in range(8)], "m").count == 8
        control = fakebackend.CONTROLS["v1"]
        assert control.tokenized == [] and control.token_batches == []


def test_a_failing_tokenizer_fails_its_request_only(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8, "tokenizes": True}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        control = fakebackend.CONTROLS["v1"]
        control.fail_tokenize = "no vocabulary for this"
        with pytest.raises(InferenceError, match="failed to tokenise.*no vocabulary for this"):
            client.encode(_mixed_texts(20), "m")
        control.fail_tokenize = None
        assert client.encode(_mixed_texts(20), "m").count == 20
        assert client.status()["queue"]["queued_texts"] == 0


def test_a_request_withdrawn_while_waiting_to_be_tokenised_is_never_tokenised(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8, "tokenizes": True}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as first, daemon.client() as second:
        control = fakebackend.CONTROLS["v1"]
        control.tokenize_gate = threading.Event()
        held = first.send("encode", model="m", payload=[text.encode() for text in _mixed_texts(20)])
        assert control.tokenize_entered.wait(5)  # the one tokens thread is busy with it
        late = second.send("encode", model="m", options={"deadline_ms": 200}, payload=[text.encode() for text in _mixed_texts(30)])
        time.sleep(0.4)  # its deadline passes while it waits for the tokens thread
        control.tokenize_gate.set()
        with pytest.raises(DeadlineExceeded):
            second.receive(late)
        assert first.receive(held)[0]["count"] == 20
        assert [count for _, count in control.tokenized] == [20]  # the late one was dropped unread


def test_a_large_request_is_tokenised_in_slices_and_stops_when_its_deadline_passes(start: StartDaemon, tmp_path: Path) -> None:
    """Slices of 256, each its own task on the tokens pool: a 15 MB request whose client
    has gone is not tokenised to its end (the review's case: one call of 4,096 texts)."""
    config = fake_config(tmp_path, {"v1": {"max_batch_size": 8, "tokenizes": True}}, extra="[cache]\nmax_mb = 0\n")
    with start(config) as daemon, daemon.client() as client:
        control = fakebackend.CONTROLS["v1"]
        assert client.encode(_mixed_texts(600), "m").count == 600
        assert [count for _, count in control.tokenized] == [256, 256, 88]
        control.tokenized.clear()
        control.tokenize_gate = threading.Event()
        late = client.send("encode", model="m", options={"deadline_ms": 300}, payload=[text.encode() for text in _mixed_texts(600)])
        assert control.tokenize_entered.wait(5)
        time.sleep(0.5)  # the deadline passes during the first slice
        control.tokenize_gate.set()
        with pytest.raises(DeadlineExceeded):
            client.receive(late)
        assert [count for _, count in control.tokenized] == [256]  # no second slice
        assert client.status()["queue"]["queued_texts"] == 0
