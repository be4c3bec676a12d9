"""Token counts by a version's own tokenizer, after its prompt, without a model run: the
client, `hs tokens` and TEI's POST /tokenize agree with the tokenizer in process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import HS
from tests.daemons import RunningDaemon, daemon_env, serving, write_config
from tests.tinymodel import build_tiny_model, minilm_dir

pytestmark = pytest.mark.slow
TEXTS = ["hello world", "The central bank raised interest rates again on Tuesday.", "Ünïcödé 🚀"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    workdir = tmp_path_factory.mktemp("tokens")
    model = build_tiny_model(workdir / "tiny", seed=2)
    config = write_config(workdir / "config.toml", f"""
[http]
listen = "127.0.0.1:0"
[models.tiny]
active = "v1"
[models.tiny.versions.v1]
source = "{model}"
device = "cpu"
prompts = {{ query = "query: " }}
""")
    with serving(config, workdir) as running:
        yield running


def test_counts_are_the_tokenizers_after_the_prompt_on_every_door(daemon: RunningDaemon) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    expected = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    with_prompt = [len(ids) for ids in tokenizer([f"query: {text}" for text in TEXTS])["input_ids"]]
    with daemon.client() as client:
        answer = client.count_tokens(TEXTS, "tiny")
        assert answer["tokens"] == expected and answer["total"] == sum(expected) and answer["version"] == "v1"
        assert client.count_tokens(TEXTS, "tiny", prompt="query")["tokens"] == with_prompt
        assert client.status()["loaded"] == ["tiny@v1"]  # loaded to count, as an encode would
        url = str(client.status()["http"])
    done = subprocess.run([str(HS), "tokens", *TEXTS, "-m", "tiny", "--json"], capture_output=True,
                          env=daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1"), timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["tokens"] == expected, done.stderr
    tei = httpx.post(f"{url}/tokenize", json={"inputs": TEXTS[0]}, timeout=60)
    assert tei.status_code == 200
    (tokens,) = tei.json()
    assert [token["id"] for token in tokens] == tokenizer(TEXTS[0])["input_ids"]
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[1]["text"] == "hello" and (tokens[1]["start"], tokens[1]["stop"]) == (0, 5)
