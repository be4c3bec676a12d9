"""The HTTP endpoint's API keys: every route but /health guarded, a non-loopback bind
refused without keys, a key file others can read refused (by the daemon, `hs config
validate` and `hs doctor` alike), and a key removed from the file refused after a reload."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from hotswapd.config.schema import Config
from hotswapd.errors import ConfigError
from tests.core.conftest import StartDaemon
from tests.core.test_http import KEY, http_config, serving


def readable_keys_config(tmp_path: Path) -> tuple[Path, Path]:
    """A key file others can read (0644), and a config naming it."""
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[http]\nlisten = "127.0.0.1:0"\napi_keys_file = "{keys}"\n')
    return keys, config


def test_keys_guard_every_route_but_health(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_TEST_KEYS", f"{KEY},{'q' * 20}")
    with serving(start, http_config(tmp_path, extra_http='api_keys_env = "HOTSWAP_TEST_KEYS"')) as (_, url), httpx.Client(base_url=url) as web:
        for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": KEY}):
            answer = web.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
            assert web.get("/v1/models", headers=headers).status_code == 401
            assert web.get("/metrics", headers=headers).status_code == 401
        assert web.get("/health").status_code == 200
        for scheme in ("bearer", "BEARER", "Bearer "):  # the scheme is case-insensitive
            assert web.get("/v1/models", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert api.embeddings.create(model="m", input="x").model == "m@v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="not-it-not-it-not-it", max_retries=0).embeddings.create(model="m", input="x")


def test_a_non_loopback_bind_needs_keys() -> None:
    with pytest.raises(ValueError, match="reachable from other machines"):
        Config.model_validate({"http": {"listen": "0.0.0.0:8080"}})
    assert Config.model_validate({"http": {"listen": "0.0.0.0:8080", "api_keys_env": "K"}}).http.listen == "0.0.0.0:8080"


def test_a_world_readable_keys_file_is_refused(tmp_path: Path) -> None:
    from hotswapd.config.http_keys import load_keys
    from hotswapd.config.http_section import HttpConfig

    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(HttpConfig(api_keys_file=str(keys)), tmp_path)
    keys.chmod(0o600)
    assert load_keys(HttpConfig(api_keys_file=str(keys)), tmp_path) == [KEY.encode()]


def test_a_key_removed_from_the_file_is_refused_after_a_reload(start: StartDaemon, tmp_path: Path) -> None:
    """Before: `hs config reload` said "config applied" and a leaked key removed from
    api_keys_file still got 200 until a restart; changing other [http] settings did nothing,
    silently."""
    leaked, kept = "l" * 32, "k" * 32
    keys = tmp_path / "keys"
    keys.write_text(f"{leaked}\n{kept}\n")
    keys.chmod(0o600)
    config = http_config(tmp_path, extra_http=f'api_keys_file = "{keys}"')
    with serving(start, config) as (daemon, url), httpx.Client(base_url=url, timeout=10) as web:
        def status(key: str) -> int:
            return web.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code

        assert status(leaked) == status(kept) == 200
        keys.write_text(f"{kept}\n")
        reply = daemon.rewrite_config(config)
        assert reply["failed"] == {} and reply["restart_needed"] == []
        assert status(leaked) == 401 and status(kept) == 200  # the very next request
        keys.chmod(0o644)  # a key file others can read: refused, the keys in force stay
        reply = daemon.rewrite_config(config.replace("max_pending = 512", "") + "\n")
        assert "chmod 600" in reply["failed"]["http.api_keys"]  # type: ignore[index]
        assert status(kept) == 200 and status(leaked) == 401
        keys.chmod(0o600)
        reply = daemon.rewrite_config(config.replace('[http]\n', '[http]\nmax_body_mb = 1\n'))
        assert reply["restart_needed"] == ["http.max_body_mb"]


def test_config_validate_runs_the_daemons_key_checks(tmp_path: Path) -> None:
    """Before: `hs config validate` called a 0644 key file ok, and the daemon then refused to start on it."""
    from typer.testing import CliRunner

    from hotswap_cli.main import app

    keys, config = readable_keys_config(tmp_path)
    refused = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert refused.exit_code != 0 and "chmod 600" in str(refused.exception)  # `hs` prints it as one line
    keys.chmod(0o600)
    assert CliRunner().invoke(app, ["config", "validate", str(config)]).exit_code == 0


def test_doctor_runs_the_daemons_key_checks(tmp_path: Path) -> None:
    """Before: `hs doctor` called a 0644 key file ok, and the daemon then refused to start on it."""
    from hotswap_cli.doctor_config import http_keys_check
    from hotswapd.config.schema import load_config

    keys, config = readable_keys_config(tmp_path)
    check = http_keys_check(load_config(config))
    assert check is not None and check.status == "fail" and "chmod 600" in check.detail
    keys.chmod(0o600)
    check = http_keys_check(load_config(config))
    assert check is not None and check.status == "ok"


def test_an_endpoint_added_to_the_config_is_said_to_need_a_restart(start: StartDaemon, tmp_path: Path) -> None:
    """Before: adding [http] listen and reloading logged applied_live [] and nothing else."""
    from tests.inproc import fake_config

    config = fake_config(tmp_path, {"v1": {}})
    with start(config) as daemon, daemon.client() as client:
        reply = daemon.rewrite_config(config + '\n[http]\nlisten = "127.0.0.1:0"\n')
        assert reply["failed"] == {} and reply["restart_needed"] == ["http.listen"]
        status = client.status()
        assert status["restart_needed"] == ["http.listen"] and status["http"] is None
        assert daemon.rewrite_config(config)["restart_needed"] == []  # taken back: nothing to restart for
        assert client.status()["restart_needed"] == []


def test_a_key_file_that_fails_keeps_the_restart_still_needed(start: StartDaemon, tmp_path: Path) -> None:
    """Found in review: a reload whose key file failed wiped `restart_needed` from `hs status`."""
    config = http_config(tmp_path)
    with serving(start, config) as (daemon, _url), daemon.client() as client:
        changed = config.replace("[http]\n", "[http]\nmax_body_mb = 1\n")
        assert daemon.rewrite_config(changed)["restart_needed"] == ["http.max_body_mb"]
        reply = daemon.rewrite_config(changed.replace("[http]\n", f'[http]\napi_keys_file = "{tmp_path}/no-such-keys"\n'))
        assert "http.api_keys" in reply["failed"]  # type: ignore[operator]
        assert client.status()["restart_needed"] == ["http.max_body_mb"]
