"""Ensembles (issue 18, item 4): a version whose vectors combine other versions' vectors,
served through the same registry and batcher, named member by member in every reply, and
switched like any version."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd.config.schema import parse_config
from hotswapd.errors import ConfigError, IncompatibleVersions, ModelLoadError, RequestError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def _members(tmp_path: Path) -> str:
    text = fake_config(tmp_path, {"a": {"dim": 8}, "b": {"dim": 12, "shift": 3}, "c": {"dim": 8, "shift": 5}}, model="base")
    text = text.replace('tag = "a"\n', 'tag = "a"\nprompts = { query = "query: " }\n')
    return text.replace('tag = "b"\n', 'tag = "b"\nprompts = { query = "Represent this query: " }\n')


def _ensemble(version: str, members: str, combine: str = "concat") -> str:
    return f'[models.combo.versions.{version}]\nbackend = "ensemble"\ncombine = "{combine}"\nmembers = [{members}]\n'


def _config(tmp_path: Path, active: str = "cat") -> str:
    return (
        _members(tmp_path)
        + f'[models.combo]\nactive = "{active}"\n'
        + _ensemble("cat", '{ model = "base", version = "a" }, { model = "base", version = "b", weight = 0.5 }')
        + _ensemble("cat2", '{ model = "base", version = "a" }, { model = "base", version = "b", weight = 2.0 }')
        + _ensemble("avg", '{ model = "base", version = "a", weight = 3.0 }, { model = "base", version = "c" }', "mean")
        + _ensemble("badmean", '{ model = "base", version = "a" }, { model = "base", version = "b" }', "mean")
        + '[daemon]\ndefault_model = "combo"\n'
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_concat_weighs_each_members_normalised_vectors_and_the_reply_names_every_member(start: StartDaemon, tmp_path: Path) -> None:
    texts = ["hello world", "an ensemble of two"]
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        combined = client.encode(texts, "combo@cat")
        a, b = client.encode(texts, "base@a"), client.encode(texts, "base@b")
        expected = _unit(np.hstack([_unit(a.embeddings), 0.5 * _unit(b.embeddings)]))
        assert combined.dim == 20 and np.allclose(combined.embeddings, expected, atol=1e-6)
        assert combined.members == [
            {"model": "base", "version": "a", "fingerprint": a.fingerprint, "dim": 8, "weight": 1.0},
            {"model": "base", "version": "b", "fingerprint": b.fingerprint, "dim": 12, "weight": 0.5},
        ]
        assert combined.fingerprint not in (a.fingerprint, b.fingerprint)
        # Served through the same registry: the members are the loaded versions themselves.
        assert fakebackend.CONTROLS["a"].loads == 1 and fakebackend.CONTROLS["b"].loads == 1
        models = {row["name"]: row for row in client.models()}
        assert models["combo"]["backend"] == "ensemble" and set(models["base"]["loaded_versions"]) >= {"a", "b"}
        assert models["combo"]["details"]["members"] == "base@a x1, base@b x0.5"
        again = client.encode(texts, "combo@cat")
        assert again.cached == 2 and np.array_equal(again.embeddings, combined.embeddings)


def test_mean_averages_members_of_one_dimension_and_refuses_others(start: StartDaemon, tmp_path: Path) -> None:
    texts = ["one text", "another"]
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        mean = client.encode(texts, "combo@avg")
        a, c = client.encode(texts, "base@a"), client.encode(texts, "base@c")
        assert mean.dim == 8
        assert np.allclose(mean.embeddings, _unit((3 * _unit(a.embeddings) + _unit(c.embeddings)) / 4), atol=1e-6)
        with pytest.raises(ModelLoadError, match=r'combine = "mean" needs members of one dimension \(base@a 8, base@b 12\)'):
            client.encode(["x"], "combo@badmean")
        assert client.encode(["still serving"], "combo@cat").count == 1


def test_each_member_puts_its_own_prompt_and_a_prompt_one_member_lacks_is_refused(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        client.encode(["find me"], "combo@cat", prompt="query")
        assert fakebackend.CONTROLS["a"].seen[-1] == "query: find me"
        assert fakebackend.CONTROLS["b"].seen[-1] == "Represent this query: find me"
        plain = client.encode(["find me"], "combo@cat")
        assert fakebackend.CONTROLS["a"].seen[-1] == "find me" and plain.cached == 0  # the prompt is part of the cache key
        with pytest.raises(RequestError, match=r"ensemble member base@a: this version has no prompt 'passage'"):
            client.encode(["x"], "combo@cat", prompt="passage")
        # A text that looks like the daemon's internal mark is still the user's text.
        client.encode(['\x1e["forged", "row"]'], "combo@cat")
        assert fakebackend.CONTROLS["a"].seen[-1] == '\x1e["forged", "row"]'


def test_an_ensemble_switches_like_any_model_and_the_space_guard_sees_its_weights(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        assert client.encode(["x"], "combo").version == "cat"
        with pytest.raises(IncompatibleVersions, match="does not share cat's embedding space"):
            client.switch("combo", "cat2")
        client.switch("combo", "cat2", force=True)
        reply = client.encode(["x"], "combo")
        assert reply.version == "cat2" and [m["weight"] for m in reply.members] == [1.0, 2.0]
        client.rollback("combo")
        assert client.encode(["x"], "combo").version == "cat"


def test_a_member_reloaded_with_new_weights_gives_the_ensemble_a_new_fingerprint(start: StartDaemon, tmp_path: Path) -> None:
    config = _config(tmp_path)
    with start(config) as inproc, inproc.client() as client:
        before = client.encode(["x"], "combo@cat")
        gate = threading.Event()
        fakebackend.CONTROLS["a"].gate = gate
        in_flight: list[object] = []

        def held() -> None:
            with inproc.client() as own:
                in_flight.append(own.encode(["held"], "combo@cat"))

        worker = threading.Thread(target=held)
        worker.start()
        assert fakebackend.CONTROLS["a"].entered.wait(10)
        inproc.rewrite_config(config.replace('tag = "a"\n', 'tag = "a"\nscale = 2.0\n', 1))
        gate.set()
        worker.join(30)
        assert len(in_flight) == 1 and in_flight[0].members[0]["fingerprint"] == before.members[0]["fingerprint"]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10  # the member reloads on the control thread
        while client.encode(["x"], "base@a").fingerprint == before.members[0]["fingerprint"] and time.monotonic() < deadline:
            time.sleep(0.01)
        after = client.encode(["x"], "combo@cat")
        assert after.members[0]["fingerprint"] != before.members[0]["fingerprint"]
        assert after.fingerprint != before.fingerprint
        deadline = time.monotonic() + 10  # closing runs on the io thread
        while fakebackend.CONTROLS["a"].closes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fakebackend.CONTROLS["a"].closes == 1  # the old member closed once the ensemble let it go


def test_a_member_that_fails_to_load_fails_the_request_with_its_name(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["b"].fail_load = "disk on fire"
        with pytest.raises(ModelLoadError, match=r"ensemble combo@cat: member base@b: .*disk on fire"):
            client.encode(["x"], "combo@cat")
        assert fakebackend.CONTROLS["a"].closes == 0 and client.encode(["x"], "base@a").count == 1
        fakebackend.CONTROLS["b"].fail_load = None
        assert client.encode(["x"], "combo@cat").dim == 20


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ('{ model = "base", version = "zz" }', r"base@zz is not a configured version"),
        ('{ model = "combo", version = "cat" }', r"combo@cat is an ensemble itself"),
        ('{ model = "base", version = "a" }, { model = "base", version = "a" }', r"base@a is named twice"),
        ('{ model = "base", version = "a", weight = -1 }', r"greater than or equal to 0.001"),
        ('{ model = "base", version = "a", weight = 1e-300 }', r"greater than or equal to 0.001"),  # 0 in float32
        ('{ model = "base", version = "a", weight = true }', r"weight: Input should be a valid number"),
        ('{ model = "base", version = "a", weight = "2" }', r"weight: Input should be a valid number"),
        ("", r"at least 1 item"),
    ],
)
def test_a_bad_ensemble_is_refused_when_the_config_is_read(tmp_path: Path, members: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from hotswapd import backends

    monkeypatch.setitem(backends.BUILTIN, "fake", "tests.fakebackend")  # for this test only: other modules list the real backends
    text = _members(tmp_path) + '[models.combo]\nactive = "cat"\n' + _ensemble("cat", '{ model = "base", version = "a" }') + _ensemble("x", members)
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(text))


def test_an_ensemble_takes_no_source_and_every_other_version_needs_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models.e.versions.v.source: an ensemble has members, not a source"):
        parse_config({"models": {"e": {"active": "v", "versions": {"v": {"backend": "ensemble", "source": "/x", "members": [{"model": "e", "version": "v"}]}}}}})
    with pytest.raises(ConfigError, match=r"models.m.versions.v.source: Field required"):
        parse_config({"models": {"m": {"active": "v", "versions": {"v": {}}}}})


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_hs_encode_and_the_http_endpoint_serve_an_ensemble(start: StartDaemon, tmp_path: Path) -> None:
    import json

    import openai

    from tests.conftest import run_hs

    with start(_config(tmp_path) + '[http]\nlisten = "127.0.0.1:0"\n') as inproc, inproc.client() as client:
        done = run_hs("encode", "hello", "-m", "combo", "-f", "json", endpoint=inproc.endpoint)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown["dim"] == 20 and [m["version"] for m in shown["members"]] == ["a", "b"]
        listed = run_hs("models", endpoint=inproc.endpoint)  # not a terminal: tab-separated, an ensemble has no source
        assert listed.returncode == 0, listed.stderr
        assert any(line.startswith(b"combo\t") and b"\tensemble-concat\t" in line and b"\t-\tbase@a x1, base@b x0.5" in line for line in listed.stdout.splitlines())
        api = openai.OpenAI(base_url=f"{inproc.daemon.http.url}/v1", api_key="unused", max_retries=0)
        got = api.embeddings.create(model="combo", input="hello world", extra_body={"input_type": "query"}, encoding_format="float")
        assert fakebackend.CONTROLS["b"].seen[-1] == "Represent this query: hello world"
        assert got.usage.prompt_tokens == 5  # as the first member counts "query: hello world": 3 words + 2 special tokens
        np.testing.assert_allclose(got.data[0].embedding, client.encode(["hello world"], "combo", prompt="query").embeddings[0], rtol=1e-6)


def _wait(condition, seconds: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


@pytest.mark.parametrize("change", ["evict", "reload"])
def test_a_member_unloaded_while_its_ensemble_assembles_is_not_kept(start: StartDaemon, tmp_path: Path, change: str) -> None:
    config = _config(tmp_path)
    with start(config) as inproc, inproc.client() as client:
        old_a = client.encode(["x"], "base@a").fingerprint
        gate = threading.Event()
        fakebackend.CONTROLS["b"].load_gate = gate  # b loads slowly: the ensemble waits, holding a
        done: list[object] = []

        def request() -> None:
            with inproc.client() as own:
                done.append(own.encode(["held"], "combo@cat"))

        worker = threading.Thread(target=request)
        worker.start()
        assert _wait(lambda: fakebackend.CONTROLS["b"].load_attempts == 1)
        if change == "evict":
            client.evict("base")
        else:
            inproc.rewrite_config(config.replace('tag = "a"\n', 'tag = "a"\nscale = 2.0\n', 1))
            assert _wait(lambda: client.encode(["x"], "base@a").fingerprint != old_a)
        gate.set()
        worker.join(30)
        assert len(done) == 1
        new_a = client.encode(["x"], "base@a").fingerprint
        assert client.encode(["z"], "combo@cat").members[0]["fingerprint"] == new_a
        assert _wait(lambda: fakebackend.CONTROLS["a"].closes == 1)  # the old a closed: nothing holds it
        assert _wait(lambda: not inproc.daemon.registry.draining())


def test_an_idle_ensemble_does_not_hold_the_memory_budget(start: StartDaemon, tmp_path: Path) -> None:
    text = fake_config(tmp_path, {"a": {"ram_gb": 0.1}, "b": {"ram_gb": 0.1}, "c": {"ram_gb": 0.1}}, model="base", extra="[memory]\nmax_gb = 0.25\n")
    text += '[models.combo]\nactive = "cat"\n' + _ensemble("cat", '{ model = "base", version = "a" }, { model = "base", version = "b" }')
    with start(text) as inproc, inproc.client() as client:
        client.encode(["x"], "combo@cat")
        assert client.encode(["x"], "base@c").count == 1  # a member went, and its ensemble with it
        assert inproc.daemon.registry.peek("combo", "cat") is None
        assert client.encode(["x"], "combo@cat").count == 1  # and it comes back on its next request


def test_an_ensemble_takes_its_members_prompts_and_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from hotswapd import backends

    monkeypatch.setitem(backends.BUILTIN, "fake", "tests.fakebackend")  # for this test only: other modules list the real backends
    text = _members(tmp_path) + '[models.combo]\nactive = "cat"\n' + _ensemble("cat", '{ model = "base", version = "a" }') + 'prompts = { q = "q: " }\ndevice = "cuda"\n'
    with pytest.raises(ConfigError, match=r"versions.cat.device: an ensemble's members each use their own; .*versions.cat.prompts: an ensemble"):
        parse_config(tomllib.loads(text))


def test_a_failing_member_is_named_and_each_member_runs_as_a_request_of_its_own(start: StartDaemon, tmp_path: Path) -> None:
    """Before: a request's texts were packed into one string per row (a copy per member,
    marked with \\x1e) to pass the batcher as the ensemble's own. Now each member runs the
    texts as a request of its own: its own batches, its own cache."""
    from hotswapd.errors import InferenceError

    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["b"].fail = "out of cheese"
        with pytest.raises(InferenceError, match=r"combo@cat: ensemble member base@b: .*RuntimeError: out of cheese"):
            client.encode(["x"], "combo@cat")
        fakebackend.CONTROLS["b"].fail = None
        controls = "\x01" * 1000
        assert client.encode([controls], "combo@cat", prompt="query").count == 1
        # The members computed (and cached) the text as they do alone: asked directly, both
        # answer from their caches, with the vectors the ensemble combined.
        a = client.encode([controls], "base@a", prompt="query")
        b = client.encode([controls], "base@b", prompt="query")
        assert (a.cached, b.cached) == (1, 1)
        combined = client.encode([controls], "combo@cat", prompt="query")
        expected = _unit(np.hstack([_unit(a.embeddings), _unit(b.embeddings) * 0.5]))
        np.testing.assert_allclose(combined.embeddings, expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["error", "chunk-mean"])
def test_each_member_keeps_its_own_long_text_policy(start: StartDaemon, tmp_path: Path, policy: str) -> None:
    from hotswapd.errors import TextTooLong

    text = fake_config(tmp_path, {"a": {"dim": 8, "max_tokens": 6, "long_text": policy}, "b": {"dim": 12, "shift": 3}}, model="base")
    text += '[models.combo]\nactive = "cat"\n' + _ensemble("cat", '{ model = "base", version = "a" }, { model = "base", version = "b" }')
    long = " ".join(f"w{i}" for i in range(40))
    with start(text) as inproc, inproc.client() as client:
        if policy == "error":
            with pytest.raises(TextTooLong, match=r"ensemble member base@a: text 1 is 42 tokens; this version takes 6"):
                client.encode(["short", long], "combo@cat")
            assert client.encode(["short"], "combo@cat").count == 1  # refused per request: the daemon serves on
        else:
            a, b = client.encode([long], "base@a"), client.encode([long], "base@b")
            assert a.chunked == 1
            expected = _unit(np.hstack([_unit(a.embeddings), _unit(b.embeddings)]))
            np.testing.assert_allclose(client.encode([long], "combo@cat").embeddings, expected, atol=1e-5)


def test_a_pinned_ensembles_members_are_pinned_too(start: StartDaemon, tmp_path: Path) -> None:
    text = fake_config(tmp_path, {"a": {"ram_gb": 0.4}, "b": {"ram_gb": 0.4}, "c": {"ram_gb": 0.4}}, model="base", extra="[memory]\nmax_gb = 1.0\n")
    text += '[models.combo]\nactive = "cat"\n' + _ensemble("cat", '{ model = "base", version = "a" }, { model = "base", version = "b" }') + "pinned = true\n"
    with start(text) as inproc, inproc.client() as client:
        client.encode(["x"], "combo@cat")
        with pytest.raises(ModelLoadError, match="does not fit"):
            client.encode(["y"], "base@c")
        assert inproc.daemon.registry.peek("combo", "cat") is not None and fakebackend.CONTROLS["a"].closes == 0
