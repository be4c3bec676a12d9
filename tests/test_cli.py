"""The real `hs` command against the shared real daemon."""

from __future__ import annotations

import pytest

import io
import json

import numpy as np

from hotswapd import Client
from tests.conftest import HsRunner, run_hs
from tests.daemons import REPO

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow


def test_encode_json(hs: HsRunner, client: Client) -> None:
    done = hs("encode", "hello world", "second text")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["model"], data["version"], data["dim"]) == ("minilm", "v1", 384)
    expected = client.encode(["hello world", "second text"]).embeddings
    np.testing.assert_allclose(np.array(data["embeddings"], dtype=np.float32), expected, rtol=0, atol=1e-7)
    assert done.stderr == b""


def test_encode_jsonl_and_model_flag(hs: HsRunner) -> None:
    done = hs("encode", "a", "b", "c", "-m", "tiny", "-f", "jsonl")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert {(row["model"], row["version"], len(row["embedding"])) for row in rows} == {("tiny", "v1", 32)}


def test_encode_npy_is_a_valid_npy_file(hs: HsRunner, client: Client) -> None:
    done = hs("encode", "one", "two", "-m", "tiny", "-f", "npy")
    assert done.returncode == 0, done.stderr
    array = np.load(io.BytesIO(done.stdout))
    assert array.dtype == np.float32 and array.shape == (2, 32)
    np.testing.assert_array_equal(array, client.encode(["one", "two"], model="tiny").embeddings)


def test_no_normalize_flag(hs: HsRunner) -> None:
    done = hs("encode", "unnormalised vector please", "-m", "tiny", "--no-normalize", "-f", "npy")
    norm = np.linalg.norm(np.load(io.BytesIO(done.stdout))[0])
    assert abs(norm - 1.0) > 1e-3


def test_stdin_streaming_of_3000_lines_keeps_order(hs: HsRunner, client: Client) -> None:
    lines = [f"line {i} of a long batch job" for i in range(3000)]  # a dozen chunks of 256 in flight
    done = hs("encode", "-m", "tiny", "-f", "jsonl", stdin=("\n".join(lines) + "\n").encode())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["index"] for row in rows] == list(range(3000))
    sample = [0, 1, 255, 256, 257, 1499, 2998, 2999]
    expected = client.encode([lines[i] for i in sample], model="tiny").embeddings
    got = np.array([rows[i]["embedding"] for i in sample], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_stdin_dash_npy_and_json(hs: HsRunner, client: Client) -> None:
    text = b"first\nsecond\r\nthird"
    npy = hs("encode", "-", "-m", "tiny", "-f", "npy", "--chunk-size", "2", stdin=text)
    array = np.load(io.BytesIO(npy.stdout))
    np.testing.assert_allclose(array, client.encode(["first", "second", "third"], model="tiny").embeddings, atol=1e-6)
    as_json = json.loads(hs("encode", "-m", "tiny", "--chunk-size", "2", stdin=text).stdout)
    assert len(as_json["embeddings"]) == 3 and as_json["model"] == "tiny"


def test_empty_stdin_gives_empty_output_of_the_models_dimension(hs: HsRunner) -> None:
    empty = json.loads(hs("encode", "-m", "tiny", stdin=b"").stdout)
    assert empty["embeddings"] == [] and empty["dim"] == 32 and empty["model"] == "tiny"
    assert hs("encode", "-m", "tiny", "-f", "jsonl", stdin=b"").stdout == b""
    assert np.load(io.BytesIO(hs("encode", "-m", "tiny", "-f", "npy", stdin=b"").stdout)).shape == (0, 32)


def test_models_status_preload_evict(hs: HsRunner) -> None:
    models = json.loads(hs("models", "--json").stdout)
    assert {row["name"] for row in models} == {"minilm", "tiny"}
    table = hs("models").stdout.decode()
    assert "minilm" in table and "tiny" in table

    evicted = hs("evict", "tiny")
    assert evicted.returncode == 0 and b"evicted tiny@v1" in evicted.stdout
    preloaded = json.loads(hs("preload", "tiny", "--json").stdout)
    assert preloaded["model"] == "tiny" and preloaded["dimension"] == 32

    status = json.loads(hs("status", "--json").stdout)
    assert status["phase"] == "ready" and "tiny@v1" in status["loaded"]
    assert b"uptime" in hs("status").stdout
    assert json.loads(hs("daemon", "status", "--json").stdout)["running"] is True


def test_unknown_model_is_one_line_on_stderr(hs: HsRunner) -> None:
    done = hs("encode", "x", "-m", "nope")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().splitlines() == ["hs: error: unknown model 'nope'; configured: minilm, tiny"]


def test_non_utf8_stdin_is_refused_clearly(hs: HsRunner) -> None:
    done = hs("encode", "-m", "tiny", stdin=b"good\n\xff\xfe bad\n")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == "hs: error: line 2 is not valid UTF-8 (byte 0)"  # the input line, counted from 1


def test_no_daemon_and_no_autostart(tmp_path) -> None:
    endpoint = f"ipc:///tmp/hs-none-{tmp_path.name}.sock"
    done = run_hs("encode", "x", endpoint=endpoint)
    assert done.returncode == 3
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "no hotswapd is running" in lines[0] and "hs daemon start" in lines[0]
    status = run_hs("daemon", "status", endpoint=endpoint)
    assert status.returncode == 3


def test_bad_socket_value_is_refused(tmp_path) -> None:
    done = run_hs("status", endpoint="tcp://0.0.0.0:5555")
    assert done.returncode == 2 and b"only loopback" in done.stderr


def test_config_validate_and_path(tmp_path, shared_config) -> None:
    ok = run_hs("config", "validate", str(shared_config))
    assert ok.returncode == 0 and b"ok (2 models, 2 versions)" in ok.stdout

    broken = tmp_path / "broken.toml"
    broken.write_text('[models.x]\nactive = "v1"\n[models.x.versions.v1]\nbackend = "nope"\nsource = "/x"\n')
    done = run_hs("config", "validate", str(broken))
    assert done.returncode == 2
    assert done.stderr.decode().startswith(f"hs: error: {broken}: models.x.versions.v1.backend: unknown backend 'nope'")

    missing = tmp_path / "missing-source.toml"
    missing.write_text('[models.x]\nactive = "v1"\n[models.x.versions.v1]\nsource = "/does/not/exist"\n')
    done = run_hs("config", "validate", str(missing))
    assert done.returncode == 2 and b"/does/not/exist does not exist" in done.stderr

    no_index = tmp_path / "no-index.toml"
    no_index.write_text(shared_config.read_text().replace('preload = true\nnormalize = true', 'preload = true\nembeddings_path = "index.npy"'))
    done = run_hs("config", "validate", str(no_index))
    assert done.returncode == 2 and b"models.tiny.versions.v1.embeddings_path: index.npy does not exist" in done.stderr

    path = run_hs("config", "path", env={"HOTSWAPD_CONFIG": str(broken)})
    assert path.stdout.decode().startswith(f"{broken}  (HOTSWAPD_CONFIG; exists)")


def test_config_validate_with_no_file_checks_the_built_in_default(tmp_path) -> None:
    """With nothing at the default location the daemon serves the built-in default, so
    that is what validate checks (issue 29: it failed); a file named must exist."""
    fresh = {"XDG_CONFIG_HOME": str(tmp_path / "fresh")}
    done = run_hs("config", "validate", env=fresh)
    assert done.returncode == 0, done.stderr
    assert b"no such file: the built-in default" in done.stdout and b"ok (1 model, 2 versions)" in done.stdout
    named = run_hs("config", "validate", str(tmp_path / "nope.toml"), env=fresh)
    assert named.returncode == 2 and b"no such config file" in named.stderr


def test_example_config_is_valid() -> None:
    done = run_hs("config", "validate", str(REPO / "config.example.toml"))
    assert done.returncode == 0, done.stderr


def test_daemon_unit(tmp_path) -> None:
    text = run_hs("daemon", "unit").stdout.decode()
    assert "Type=notify" in text and "ExecStart=" in text and "hotswapd" in text
    done = run_hs("daemon", "unit", "--install", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert done.returncode == 0
    assert (tmp_path / "systemd" / "user" / "hotswapd.service").read_text() == text
