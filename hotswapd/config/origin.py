"""Where the daemon's config comes from: a TOML file, or an SSM Parameter Store parameter.

Both give a validated :class:`~hotswapd.config.schema.Config` from ``load()`` and a change
detector from ``watcher()`` with the same small interface (``start``, ``due``,
``mark_applied``, ``stop``): a file is watched with watchdog, a parameter is polled every
``daemon.config_poll_seconds``. A change is applied exactly like a file edit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import tomllib
from pathlib import Path
from typing import Any, Protocol

from hotswapd.config.schema import Config, load_config, parse_config
from hotswapd.errors import ConfigError

log = logging.getLogger(__name__)
SSM_PREFIX = "ssm:"


class ChangeDetector(Protocol):
    def start(self) -> None: ...
    def due(self) -> bool: ...
    def mark_applied(self) -> None: ...
    def stop(self) -> None: ...


class ConfigOrigin(Protocol):
    name: str
    is_file: bool

    def load(self) -> Config: ...
    def watcher(self, config: Config) -> ChangeDetector: ...


class FileOrigin:
    is_file = True

    def __init__(self, path: Path, missing_ok: bool) -> None:
        self.path = path
        self.name = str(path)
        self._missing_ok = missing_ok

    def load(self) -> Config:
        return load_config(self.path, missing_ok=self._missing_ok)

    def watcher(self, config: Config) -> ChangeDetector:
        from hotswapd.config.watch import ConfigWatcher

        # Watched even while absent: a config file created later is picked up.
        return ConfigWatcher(self.path, config.daemon.watch_debounce_seconds)


class SsmOrigin:
    """A parameter holding the config as TOML, or as JSON (a value starting with ``{``)."""

    is_file = False

    def __init__(self, spec: str) -> None:
        self.parameter = spec.removeprefix(SSM_PREFIX)
        self.name = spec
        self.last_digest: str | None = None
        self._client: Any = None
        if not self.parameter.startswith("/") and "/" in self.parameter:
            raise ConfigError(f"{spec}: a parameter path starts with '/' (ssm:/path/to/param)")

    def fetch(self) -> str:
        """The parameter's current value; ConfigError saying why when it cannot be read."""
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise ConfigError(f"{self.name}: SSM configs need boto3: pip install 'hotswap[aws]'") from exc
        try:
            if self._client is None:
                self._client = boto3.client("ssm")
            reply = self._client.get_parameter(Name=self.parameter, WithDecryption=True)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ParameterNotFound":
                raise ConfigError(f"{self.name}: no such SSM parameter") from exc
            raise ConfigError(f"{self.name}: cannot read the parameter: {error.get('Code')}: {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise ConfigError(f"{self.name}: cannot reach SSM: {exc}") from exc
        return str(reply["Parameter"]["Value"])

    def load(self) -> Config:
        text = self.fetch()
        self.last_digest = hashlib.sha256(text.encode()).hexdigest()
        return parse_config(self._parse(text))

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            return json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{self.name}: neither valid TOML nor valid JSON: {exc}") from exc

    def watcher(self, config: Config) -> ChangeDetector:
        return SsmPoller(self, config.daemon.config_poll_seconds)


class SsmPoller:
    """Reads the parameter every ``interval`` seconds on its own thread; due when it changed."""

    def __init__(self, origin: SsmOrigin, interval: float) -> None:
        self._origin = origin
        self._interval = interval
        self._seen: str | None = origin.last_digest
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="ssm-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("polling %s every %.1f s for changes", self._origin.name, self._interval)

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._seen = hashlib.sha256(self._origin.fetch().encode()).hexdigest()
            except ConfigError as exc:
                log.warning("config poll failed, keeping the running config: %s", exc.message)
            except Exception:  # noqa: BLE001 -- the poller outlives any failure; the next poll runs
                log.exception("config poll failed unexpectedly, keeping the running config")

    def due(self) -> bool:
        return self._seen is not None and self._seen != self._origin.last_digest

    def mark_applied(self) -> None:
        self._seen = self._origin.last_digest

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def origin_for(spec: str | None, default_path: Path, missing_ok: bool) -> ConfigOrigin:
    if spec and spec.startswith(SSM_PREFIX):
        return SsmOrigin(spec)
    # Absolute: `hs status` and the --config mismatch check compare it from other directories.
    return FileOrigin(Path(spec).expanduser().absolute() if spec else default_path, missing_ok)
