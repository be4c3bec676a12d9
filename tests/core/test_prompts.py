"""Prompts and preprocessing per version (issue 18, item 3): applied in the daemon before the
cache and the batcher, by name from the request, the config or the model directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest

from hotswapd.errors import ConfigError, RequestError
from tests import fakebackend
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config, fake_source

def _config(tmp_path: Path, extra: str = "") -> str:
    text = fake_config(tmp_path, {"v1": {}, "clean": {}, "dflt": {}}, extra=extra)
    text = text.replace('tag = "clean"\n', 'tag = "clean"\npreprocess = ["nfkc", "lowercase", "collapse_whitespace", "strip"]\n')
    text = text.replace('tag = "v1"\n', 'tag = "v1"\nprompts = { query = "query: ", passage = "passage: " }\n')
    return text.replace('tag = "dflt"\n', 'tag = "dflt"\nprompts = { query = "query: ", passage = "passage: " }\ndefault_prompt = "passage"\n')


def test_a_named_prompt_goes_before_each_text_and_an_unknown_one_is_refused(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        plain = client.encode(["hello", "world"], "m@v1")
        query = client.encode(["hello", "world"], "m@v1", prompt="query")
        assert fakebackend.CONTROLS["v1"].seen == ["hello", "world", "query: hello", "query: world"]
        assert query.cached == 0 and not np.array_equal(plain.embeddings, query.embeddings)  # the cache keys the prompted text
        assert np.array_equal(query.embeddings, client.encode(["query: hello", "query: world"], "m@v1").embeddings)
        with pytest.raises(RequestError, match=r"this version has no prompt 'doc' \(its prompts: passage, query\)"):
            client.encode(["x"], "m@v1", prompt="doc")
        with pytest.raises(RequestError, match="has no prompt 'query' \\(its prompts: none\\)"):
            client.encode(["x"], "m@clean", prompt="query")
        assert client.ping()["pong"]


def test_the_default_prompt_and_the_preprocessors_apply_without_being_asked(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        client.encode(["hello"], "m@dflt")
        client.encode(["hello"], "m@dflt", prompt="query")
        assert fakebackend.CONTROLS["dflt"].seen == ["passage: hello", "query: hello"]
        client.encode(["  Ｈｅｌｌｏ\t\tBIG\n World  "], "m@clean")
        assert fakebackend.CONTROLS["clean"].seen == ["hello big world"]
        fingerprints = {version: client.encode(["x"], f"m@{version}").fingerprint for version in ("v1", "clean", "dflt")}
        assert len(set(fingerprints.values())) == 3  # prompts and preprocessors are part of a version's identity


def test_a_model_directorys_own_prompts_are_the_default(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"st": {}})
    (fake_source(tmp_path, "st") / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "Represent this query: ", "bad": 7}, "default_prompt_name": "query"})
    )
    with start(config) as inproc, inproc.client() as client:
        client.encode(["a"], "m@st")
        with pytest.raises(RequestError, match=r"its prompts: query\)"):  # a non-string prompt in the file is left out
            client.encode(["a"], "m@st", prompt="bad")
        assert fakebackend.CONTROLS["st"].seen == ["Represent this query: a"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_hs_encode_and_the_http_endpoint_take_the_prompt(start: StartDaemon, tmp_path: Path) -> None:
    config = _config(tmp_path, extra='[http]\nlisten = "127.0.0.1:0"\n')
    with start(config) as inproc, inproc.client() as client:
        done = run_hs("encode", "hello", "-m", "m@v1", "--prompt", "passage", endpoint=inproc.endpoint)
        assert done.returncode == 0, done.stderr
        assert fakebackend.CONTROLS["v1"].seen[-1] == "passage: hello"
        refused = run_hs("encode", "hello", "-m", "m@v1", "--prompt", "nope", endpoint=inproc.endpoint)
        assert refused.returncode != 0 and b"no prompt 'nope'" in refused.stderr and refused.stderr.count(b"\n") == 1
        api = openai.OpenAI(base_url=f"{inproc.daemon.http.url}/v1", api_key="unused", max_retries=0)
        got = api.embeddings.create(model="m@v1", input="hello", extra_body={"input_type": "query"}, encoding_format="float")
        assert fakebackend.CONTROLS["v1"].seen[-1] == "query: hello"
        np.testing.assert_allclose(got.data[0].embedding, client.encode(["hello"], "m@v1", prompt="query").embeddings[0], rtol=1e-6)
        with pytest.raises(openai.BadRequestError, match="no prompt 'doc'"):
            api.embeddings.create(model="m@v1", input="hello", extra_body={"input_type": "doc"})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('prompts = { query = "q: " }\ndefault_prompt = "passage"', "default_prompt 'passage' is not among prompts: query"),
        ('preprocess = ["uppercase"]', "preprocess"),
        ('prompts = { "" = "x" }', "must be 1 to 64 characters"),
    ],
)
def test_prompt_settings_are_checked(tmp_path: Path, lines: str, message: str) -> None:
    from hotswapd.config.schema import load_config

    (tmp_path / "c.toml").write_text(f'[models.m]\nactive = "v"\n[models.m.versions.v]\nsource = "x"\n{lines}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.toml")


def test_a_text_that_preprocessing_makes_too_long_is_refused(start: StartDaemon, tmp_path: Path) -> None:
    """Before: NFKC made a 256 KiB text 2.8 MB, past every limit, and 40 of them took the
    daemon to 8 GB."""
    from hotswapd.errors import TextTooLong

    with start(_config(tmp_path, extra="[daemon]\nmax_text_bytes = 4096\n")) as inproc, inproc.client() as client:
        expands = "\ufdfa" * 1000  # 3,000 bytes; NFKC: 18 characters each
        with pytest.raises(TextTooLong, match=r"text 1 is \d+ bytes after its prompt and preprocessing; the limit is 4096"):
            client.encode(["fine", expands], "m@clean")
        assert fakebackend.CONTROLS["clean"].seen == []
        assert client.encode(["fine"], "m@clean").count == 1


def test_a_default_prompt_the_version_lacks_fails_the_load_and_long_directory_prompts_are_left_out(start: StartDaemon, tmp_path: Path) -> None:
    """Before: the load succeeded, a switch to it was allowed, and every request then failed."""
    from hotswapd.errors import ModelLoadError

    config = fake_config(tmp_path, {"v1": {}, "st": {"default_prompt": "query2"}})
    (fake_source(tmp_path, "st") / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "q: ", "huge": "x" * 5000}}))
    with start(config) as inproc, inproc.client() as client:
        with pytest.raises(ModelLoadError, match=r"default_prompt 'query2' is not among the version's prompts: query"):
            client.encode(["a"], "m@st")
        with pytest.raises(ModelLoadError):
            client.switch("m", "st")
        assert client.encode(["a"], "m").version == "v1"


def test_a_worker_outside_the_daemon_applies_the_same_prompt(start: StartDaemon, tmp_path: Path) -> None:
    """What `hs encode --ray --prompt` runs on each actor (hotswapd.pipeline.standalone)."""
    from hotswapd.pipeline.standalone import encode_texts, load_version

    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        daemon_rows = client.encode(["hello", "  Ｂig  "], "m@dflt", prompt="query").embeddings
        worker = load_version(inproc.config_path, "m@dflt")
        np.testing.assert_array_equal(encode_texts(worker, ["hello", "  Ｂig  "], prompt="query"), daemon_rows)
        np.testing.assert_array_equal(encode_texts(worker, ["hello"]), client.encode(["hello"], "m@dflt").embeddings)  # the default prompt
