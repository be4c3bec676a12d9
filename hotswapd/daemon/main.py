"""``hotswapd``: parse arguments, set up logging and signals, run until told to stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import zmq

from hotswapd import __version__, systemd
from hotswapd.config import Config, load_config
from hotswapd.daemon.handlers import DaemonState, Handlers
from hotswapd.daemon.registry import Registry
from hotswapd.daemon.router import Router
from hotswapd.errors import ConfigError, HotswapError
from hotswapd.lockfile import EndpointLock
from hotswapd.paths import CONFIG_ENV, ensure_socket_dir, ipc_path, lock_path, resolve_config_path, resolve_endpoint

log = logging.getLogger("hotswapd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hotswapd", description="Keep embedding models warm and serve them over ZeroMQ.")
    parser.add_argument("--socket", help="ZeroMQ endpoint: ipc://PATH, tcp://127.0.0.1:PORT or a path (env HOTSWAPD_SOCKET)")
    parser.add_argument("--config", help="TOML config file (env HOTSWAPD_CONFIG)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides daemon.log_level")
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="how long a stop waits for requests in flight")
    parser.add_argument("--version", action="version", version=f"hotswapd {__version__}")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    # No timestamps when journald is capturing us: it stamps every line itself.
    under_journald = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def config_may_be_missing(explicit: str | None) -> bool:
    """Only the platform default may be absent (the built-in default serves); a named file must exist."""
    return explicit is None and CONFIG_ENV not in os.environ


class Daemon:
    """The running daemon: owns the lock, the socket, the registry and the signal flags."""

    def __init__(self, config: Config, config_path: Path, missing_ok: bool, endpoint: str, drain_seconds: float) -> None:
        self._config_path = config_path
        self._config_missing_ok = missing_ok
        self._drain_seconds = drain_seconds
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._lock = EndpointLock(lock_path(endpoint), endpoint)
        self.state = DaemonState(endpoint=endpoint, config_path=str(config_path) if config.path else None)
        self.registry = Registry(config)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._router = Router(self._context, endpoint, Handlers(self.registry, self.state), self.state)

    def run(self) -> int:
        endpoint = self.state.endpoint
        sock_path = ipc_path(endpoint)
        if sock_path is not None:
            ensure_socket_dir(sock_path)
        self._lock.acquire()
        try:
            if sock_path is not None and sock_path.exists():
                log.warning("removing stale socket %s left by a daemon that did not stop cleanly", sock_path)
                sock_path.unlink()
            self._router.bind()
            self._install_signal_handlers()
            self._router.submit_loading(self._preload_then_ready)
            self._router.serve(self._stop, self._on_tick, self._drain_seconds)
            systemd.notify("STOPPING=1")
        finally:
            self._router.close()
            self.registry.close()
            self._context.term()
            self._lock.release()
        log.info("stopped")
        return 0

    def _preload_then_ready(self) -> None:
        for name in self.registry.preload_targets():
            try:
                self.registry.preload(name)
            except HotswapError as exc:
                log.error("preload of %s failed: %s", name, exc.message)
        if self.state.phase == "starting":
            self.state.phase = "ready"
        systemd.notify("READY=1\nSTATUS=serving " + ", ".join(f"{m.model}@{m.version}" for m in self.registry.loaded()))
        log.info("ready")

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reload_requested.set())

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            # Second signal: the user does not want to wait for the drain.
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        self._stop.set()

    def _on_tick(self) -> None:
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self.reload()

    def reload(self) -> None:
        """Re-read the config; a bad one leaves everything as it was and is reported by status."""
        systemd.notify("RELOADING=1")
        try:
            config = load_config(self._config_path, missing_ok=self._config_missing_ok)
        except ConfigError as exc:
            self.state.config_error = exc.message
            log.error("config reload rejected, keeping the running config: %s", exc.message)
        else:
            self.state.config_error = None
            unloaded = self.registry.replace_config(config)
            log.info("config reloaded from %s; unloaded changed versions: %s", self._config_path, unloaded or "none")
            self._router.submit_loading(self._preload_then_ready)
        systemd.notify("READY=1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config_path = resolve_config_path(args.config)
        missing_ok = config_may_be_missing(args.config)
        config = load_config(config_path, missing_ok=missing_ok)
        endpoint = resolve_endpoint(args.socket)
    except ConfigError as exc:
        configure_logging(args.log_level or "info")
        log.error("%s", exc.message)
        return 2
    configure_logging(args.log_level or config.daemon.log_level)
    # hotswapd never fetches from a model hub at run time; make the libraries agree.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Progress bars are for terminals; in a daemon's log they are noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    log.info("hotswapd %s starting (pid %d, config %s)", __version__, os.getpid(), config.path or "built-in default")
    try:
        return Daemon(config, config_path, missing_ok, endpoint, args.drain_seconds).run()
    except HotswapError as exc:
        log.error("%s", exc.message)
        return 1
    except zmq.ZMQError as exc:
        log.error("cannot serve %s: %s", endpoint, exc)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
