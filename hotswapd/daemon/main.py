"""``hotswapd``: parse arguments, set up logging and signals, run until told to stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil
import zmq
from pydantic import ValidationError

from hotswapd import __version__

from hotswapd.host import children

from hotswapd.host import curve_keys

from hotswapd.host import paths

from hotswapd.host import systemd
from hotswapd.alerts.dispatch import Alerts
from hotswapd.benchmarking.periodic import PeriodicBench
from hotswapd.config.ensemble_section import ENSEMBLE
from hotswapd.config.schema import Config
from hotswapd.calibration.hook import CalibrationHook
from hotswapd.corpus.attach import CorpusHook, corpora_status
from hotswapd.corpus.search_op import SEARCH_OP
from hotswapd.rerank.rerank_op import RERANK_OP
from hotswapd.core.tokens_op import TOKENS_OP
from hotswapd.ensemble.assemble import assemble
from hotswapd.tuning.tune_op import TUNE_OP
from hotswapd.config.origin import ConfigOrigin, origin_for
from hotswapd.core import memory
from hotswapd.core.admission import Admission, limits_from
from hotswapd.core.audit import AuditLog
from hotswapd.core.burst_memory import BurstMemory
from hotswapd.core.cost_prior import CostPrior
from hotswapd.pipeline.cache import embedding_cache
from hotswapd.core.handlers import DaemonState, Handlers
from hotswapd.core.health import HealthBook
from hotswapd.pipeline.inference import Inference
from hotswapd.core.metrics import Metrics
from hotswapd.core.registry import Registry
from hotswapd.core.seams import Seams
from hotswapd.fleet.joining import join as join_fleet
from hotswapd.core.rollout import Route
from hotswapd.core.router import Router
from hotswapd.core.services import Services
from hotswapd.core.statefile import StateFile
from hotswapd.core.switch_request import SwitchRequest
from hotswapd.core.switching import Switchboard
from hotswapd.core.ticker import Ticker
from hotswapd.core.workers import Workers
from hotswapd.tracing import setup as tracing_setup
from hotswapd.errors import ConfigError, HotswapError
from hotswapd.config.http_section import HttpConfig
from hotswapd.host.lockfile import EndpointLock
from hotswapd.host.paths import CONFIG_ENV, default_config_path, ensure_socket_dir, ipc_path, lock_path, resolve_endpoint

if TYPE_CHECKING:
    from hotswapd.http.server import HttpServer

log = logging.getLogger("hotswapd")
HEALTH_RETENTION_SECONDS = 3600.0  # per-model windows (health.window_seconds) read within this
TICK_SECONDS = 0.1
FILES_CHECK_SECONDS = 5.0  # how often loaded versions' files (a corpus) are compared with what was opened
TRIM_DELAY_SECONDS = 1.0
RELEASE_SECONDS = 30.0  # the arenas' release waits this long for the inference thread at most


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hotswapd", description="Keep embedding models warm and serve them over ZeroMQ.")
    parser.add_argument("--socket", help="ZeroMQ endpoint: ipc://PATH, tcp://127.0.0.1:PORT or a path (env HOTSWAPD_SOCKET)")
    parser.add_argument("--config", help="TOML config file, or ssm:/PARAMETER in SSM Parameter Store (env HOTSWAPD_CONFIG)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides daemon.log_level")
    parser.add_argument("--http", metavar="HOST:PORT", help="serve the OpenAI-compatible HTTP endpoint there (overrides http.listen)")
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="how long a stop waits for requests in flight")
    parser.add_argument("--version", action="version", version=f"hotswapd {__version__}")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    # No timestamps when journald is capturing us: it stamps every line itself.
    under_journald = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    # --log-level debug is for hotswapd's own messages: libraries at debug flood the log.
    chosen = logging.getLevelName(level.upper())
    logging.basicConfig(level=max(chosen, logging.INFO), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("hotswapd").setLevel(chosen)
    # boto3 logs every client it creates at INFO; an SSM poll would fill the log.
    for chatty in ("botocore", "boto3", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def http_settings(config: Config, listen: str | None) -> HttpConfig:
    """``[http]``, with ``--http HOST:PORT`` in place of its listen (checked the same way)."""
    if listen is None:
        return config.http
    try:
        return HttpConfig.model_validate({**config.http.model_dump(), "listen": listen})
    except ValidationError as exc:
        raise ConfigError(f"--http {listen}: {exc.errors()[0]['msg']}") from None


def config_may_be_missing(explicit: str | None) -> bool:
    """Only the platform default may be absent (the built-in default serves); a named file must exist."""
    return explicit is None and CONFIG_ENV not in os.environ


def features() -> Seams:
    """The composition root's wiring: each feature plugs into the core's seams here, one
    line each, and the core names none of them (hotswapd.core.seams)."""
    seams = Seams()
    seams.add_op(SEARCH_OP)  # hs search: a version's own corpus
    seams.add_op(RERANK_OP)  # hs rerank: a rerank version's scores for a query's documents
    seams.add_op(TOKENS_OP)  # hs tokens: a version's own token counts, no model run
    seams.add_op(TUNE_OP)  # hs tune: measure a version's paths on this machine
    seams.version_hooks.append(CorpusHook())  # a version's corpus opens, counts and closes with it
    seams.status_sections["corpora"] = corpora_status
    seams.assemblers[ENSEMBLE] = assemble  # a version combined from other loaded versions
    return seams


class Daemon:
    """The running daemon: owns the lock, the socket, the registry and the signal flags."""

    def __init__(self, config: Config, origin: ConfigOrigin, endpoint: str, drain_seconds: float, http: HttpConfig | None = None) -> None:
        if endpoint.startswith("tcp://"):
            curve_keys.server_keys()  # TCP is served with CURVE only: no keys, no start (before anything is built)
        self._origin = origin
        self._drain_seconds = drain_seconds
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._reload_lock = threading.Lock()  # the ticker and a `reload` command may race
        # Models whose file `active` could not be switched to, with the route then in force.
        self._config_switch_failed: dict[str, Route] = {}
        self._lock = EndpointLock(lock_path(endpoint), endpoint)
        self.state = DaemonState(endpoint=endpoint, config_path=origin.name if (config.path or not origin.is_file) else None)
        state_dir = paths.state_dir()
        for private in (state_dir, paths.cache_dir()):
            problem = paths.ensure_private_dir(private)
            if problem:
                log.error("cannot use %s; serving without what it would hold", problem)
        self.workers = Workers()
        self.metrics = Metrics()
        self.alerts = Alerts(config.alerts)
        self.audit = AuditLog(state_dir / "audit.jsonl", listener=self._on_audit_event)
        self.seams = features()
        self.registry = Registry(config, on_event=self.audit.record, closer=lambda work: self.workers.submit("io", work), seams=self.seams)
        self.health = HealthBook(window_seconds=HEALTH_RETENTION_SECONDS)
        statefile = StateFile(state_dir / "state.json")
        saved = statefile.load()  # before adopt_config, which writes the file
        if statefile.set_aside:
            self.audit.record("state_rejected", reason=statefile.set_aside)
        self.admission = Admission(
            limits_from(config.daemon.max_queue_texts, config.daemon.max_queue_mb), on_drained=self._trim_soon
        )
        self._trim_at: float | None = None
        self.burst_memory = BurstMemory(lambda: psutil.Process().memory_info().rss, self._give_memory_back)
        self._files_checked_at = time.monotonic()
        self.inference = Inference(
            embedding_cache(config), self.metrics.record_batch, cache_io=self.workers.executor("io"), on_cost=self.admission.observe,
            coefficients=self.admission.coefficients, offload=lambda work: self.workers.submit("tokens", work),
        )
        # Each version prices its work as it loads, so a burst on a cold daemon is priced too.
        self.seams.version_hooks.append(CostPrior(self.inference.call_if_idle, self.admission.observe, self.admission.forget))
        self.seams.version_hooks.append(CalibrationHook(self.inference.call_soon))  # int8/uint8 output: each version's ranges, measured at its load
        self.switchboard = Switchboard(
            self.registry, self.health, self.audit, statefile, schedule=self._submit_control, exclusive=self.inference.call
        )
        self.switchboard.adopt_config(config)
        self.switchboard.restore(saved, config)
        # A fleet member: its switches are agreed with the other members through etcd.
        self.fleet = join_fleet(config.fleet, config.base_dir, self.seams, self.registry, self.switchboard, self.metrics.registry) if config.fleet else None
        self.periodic = PeriodicBench(
            config.bench, self.registry, self.switchboard, self.inference, self.admission, self.audit,
            lambda work: self.workers.submit("bench", work), self._stop, on_rows=self.metrics.record_bench_round,
        )
        self.seams.status_sections["periodic_bench"] = lambda snap: self.periodic.describe()
        self.metrics.watch(self.registry, self.switchboard, self.inference.cache)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        services = Services(
            self.registry, self.switchboard, self.health, self.metrics, self.audit, self.reload, self.inference, self.admission, self.workers
        )
        self._router = Router(self._context, endpoint, Handlers(services, self.state), self.state, self.workers)
        self._watcher = origin.watcher(config)
        self._ticker = Ticker(self._on_tick, TICK_SECONDS, self._stop)
        self._http_settings = http or config.http  # read at start; a reload takes its keys, the rest needs a restart
        self._http_listen_flag = http.listen if http is not None and http is not config.http else None
        self._http_base = config.base_dir
        self.http: HttpServer | None = None

    def _trim_soon(self) -> None:
        """The queue has drained: a moment later, once the last requests' buffers are gone
        too and if no traffic came back, check what the work grew (on the io thread, from
        the ticker; hotswapd.core.burst_memory)."""
        self._trim_at = time.monotonic() + TRIM_DELAY_SECONDS

    def _give_memory_back(self) -> bool:
        """After a drained burst (on the io thread): each loaded version gives back what its
        backend kept past the C library's reach (an arena), on the inference thread if it
        is idle (never beside a batch; traffic that came back will drain again), then the
        heap is trimmed."""

        def release() -> None:
            for loaded in self.registry.loaded():
                if loaded.caps.release_memory is not None and not loaded.closed:
                    try:
                        loaded.caps.release_memory()
                    except Exception:  # noqa: BLE001 -- memory not given back is no failure of serving
                        log.warning("%s@%s: giving back its memory failed", loaded.model, loaded.version, exc_info=True)

        try:
            ran, _ = self.inference.call_if_idle(release, RELEASE_SECONDS)
        finally:
            memory.trim()
        return ran

    def _submit_control(self, work: Callable[[], None]) -> None:
        self.workers.submit("control", work)

    def run(self) -> int:
        endpoint = self.state.endpoint
        sock_path = ipc_path(endpoint)
        if sock_path is not None:
            ensure_socket_dir(sock_path)
        else:  # a TCP endpoint's lock file lives in the runtime dir, which may not exist yet
            problem = paths.ensure_private_dir(lock_path(endpoint).parent)
            if problem:
                raise ConfigError(f"cannot create the runtime dir for {endpoint}'s lock file: {problem}")
        self._lock.acquire()
        # Children may run (an in-process daemon before this one, in tests, stopped them); a
        # stopped daemon leaves them stopped, so a load it abandoned cannot start one late.
        children.start_accepting()
        try:
            if sock_path is not None and (sock_path.exists() or sock_path.is_symlink()):
                # We hold the lock, so no daemon serves it; but only a socket file is ours to
                # remove: a regular file, a directory or a link there is somebody's data.
                if sock_path.is_symlink() or not stat.S_ISSOCK(sock_path.lstat().st_mode):
                    raise ConfigError(f"{sock_path} exists and is not a socket; refusing to replace it (choose another --socket or move it away)")
                log.warning("removing stale socket %s left by a daemon that did not stop cleanly", sock_path)
                sock_path.unlink()
            self._router.bind()
            if self.fleet is not None:
                self.fleet.start()
            self._start_http()
            self._serve_metrics()
            self._watcher.start()
            self._install_signal_handlers()
            self._submit_control(self._preload_then_ready)
            self._ticker.start()
            self._router.serve(self._stop, self._drain_seconds)
            systemd.notify("STOPPING=1")
        finally:
            self._stop.set()
            if self.fleet is not None:  # leaves at once: no switch waits for a stopped member
                self.fleet.stop()
            if self.http is not None:  # its requests in flight were drained with the others
                self.http.stop()
            self._ticker.join()
            self._watcher.stop()
            self.registry.stop_loading()  # a load waiting on a hung mount gives up now
            children.stop_all()  # a conversion or a measurement ends with the daemon
            self.alerts.stop()  # what is queued gets a few seconds to go out
            self.workers.close()
            # The inference thread stops before the router closes: a batch that outlived the
            # drain still pushes its reply through a socket of its own, which must be closed
            # (by the router, below) before the context can terminate.
            self.inference.stop()
            self._router.close()
            if self.inference.cache.disk is not None:
                self.inference.cache.disk.close()
            self.registry.close()
            if self.inference.running():
                log.warning("the inference thread is still in a batch; closing its sockets regardless")
                self._context.destroy(linger=0)
            else:
                self._context.term()
            self._lock.release()
        log.info("stopped")
        return 0

    def _start_http(self) -> None:
        settings = self._http_settings
        if not settings.listen:
            return
        from hotswapd.http.server import HttpServer

        address = self._router.bind_inproc()
        self.http = HttpServer(settings, settings.listen, self._http_base, self._context, address, self._health_facts)
        self.http.start()
        self.state.http_url = self.http.url

    def _serve_metrics(self) -> None:
        port = self.registry.config.daemon.metrics_port
        if port is None:
            return
        try:
            self.metrics.serve(port)
            log.info("metrics on http://127.0.0.1:%d/metrics", port)
        except OSError as exc:
            log.error("cannot serve metrics on 127.0.0.1:%d: %s (hs metrics still works)", port, exc)

    def _preload_then_ready(self) -> None:
        snap = self.registry.published.current
        # Every version that asks, serving or not (one that did not serve was skipped without
        # a word): the serving ones first, so the traffic's versions are ready soonest.
        wanted = [(name, version) for name, model in sorted(snap.config.models.items()) for version, spec in sorted(model.versions.items()) if spec.preload]
        serving = {(name, version) for name, route in snap.routes.items() for version in route.serving()}
        for name, version in sorted(wanted, key=lambda pair: pair not in serving):
            try:
                self.registry.get(name, version)
            except HotswapError as exc:
                log.error("preload of %s@%s failed: %s", name, version, exc.message)
        if self.fleet is not None and not self.fleet.joined.wait(self.fleet.config.lease_seconds):
            log.warning("fleet: etcd not reached at start; serving this member's own state, degraded, until it is")
        if self.state.phase == "starting":
            self.state.phase = "ready"
        self.burst_memory.settle()  # what the preloaded versions hold is the resting size
        systemd.notify("READY=1\nSTATUS=serving " + ", ".join(f"{m.model}@{m.version}" for m in self.registry.loaded()))
        log.info("ready")

    def _health_facts(self) -> dict[str, Any]:
        """What /health answers: the phase, and a fleet member's link to its fleet."""
        facts: dict[str, Any] = {"status": self.state.phase}
        fleet = self.seams.status_sections.get("fleet")
        if fleet is not None:
            facts["fleet"] = fleet(self.registry.published.current)
        return facts

    def request_stop(self) -> None:
        """Stop as SIGTERM would: drain the requests in flight, then exit ``run``."""
        self._stop.set()
        self.registry.stop_loading()
        children.stop_all(wait=False)
        self._router.wake()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # an in-process daemon (tests) is stopped with request_stop()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reload_requested.set())

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            # Second signal: the user does not want to wait for the drain.
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        self._stop.set()
        self.registry.stop_loading()  # requests waiting on a hung load are answered, not drained for
        children.stop_all(wait=False)  # and a conversion or `hs tune` measurement ends, not waited out

    def _on_tick(self) -> None:
        """Housekeeping, on the ticker thread (never the socket thread)."""
        # A reload loads the versions whose options changed before it publishes: on the
        # control thread, in order with switches and commands, never on this one.
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._submit_control(lambda: self._reload_quietly("signal"))
        elif self._watcher.due():
            self._submit_control(lambda: self._reload_quietly("config edit"))
        self.switchboard.tick()
        self.periodic.tick()
        self.registry.expire_idle()
        if time.monotonic() >= self._files_checked_at + FILES_CHECK_SECONDS:
            # A corpus replaced on disk is seen even with no search on it (and its old maps,
            # which hold an unlinked corpus's disk space, are closed); on the search pool, the corpora's own.
            self._files_checked_at = time.monotonic()
            self.workers.submit("search", self.registry.refresh_attachments)
        self.inference.batcher.shed()  # what would wait in vain for the next batch boundary is answered now
        if self._trim_at is not None and time.monotonic() >= self._trim_at:
            self._trim_at = None
            self.workers.submit("io", lambda: self.burst_memory.check() or self._trim_soon())  # not done: later

    def _reload_quietly(self, trigger: str) -> None:
        try:
            self.reload(trigger)
        except ConfigError:
            pass  # already logged, audited and shown by status
        except Exception as exc:  # noqa: BLE001 -- a bad edit is reported; the running config stays
            log.exception("applying the config (%s) failed; the running config stays", trigger)
            self.state.config_error = f"{type(exc).__name__}: {exc}"

    def reload(self, trigger: str) -> dict[str, Any]:
        """Re-read the config and apply the difference; a bad file changes nothing."""
        with self._reload_lock:
            return self._reload(trigger)

    def _reload(self, trigger: str) -> dict[str, Any]:
        systemd.notify("RELOADING=1")
        try:
            try:
                config = self._origin.load()
            except ConfigError as exc:
                self.state.config_error = exc.message
                self.audit.record("config_rejected", trigger=trigger, reason=exc.message)
                log.error("config rejected, keeping the running config: %s", exc.message)
                raise
            finally:
                self._watcher.mark_applied()
            self.state.config_error = None
            # A config file that appeared after a start on the built-in default is now the one.
            self.state.config_path = self._origin.name if (config.path or not self._origin.is_file) else None
            return self._apply(config, trigger)
        finally:
            systemd.notify("READY=1")

    def _apply(self, config: Config, trigger: str) -> dict[str, Any]:
        """Apply ``config``; answer only once the very next request is served by it: changed
        versions loaded anew (old copies serve meanwhile), config, routes and fresh copies
        published as one snapshot, then switches for a changed `active`. A version that fails
        to load again keeps its old copy serving, said in the reply (``failed``)."""
        # Worked out before anything changes: a config failing here leaves the running one whole.
        cache_bytes = int(config.cache.max_mb * 2**20)
        limits = limits_from(config.daemon.max_queue_texts, config.daemon.max_queue_mb)
        fleet_changed = config.fleet != self.registry.config.fleet  # joining or leaving etcd takes a restart
        plan = self.registry.prepare_config(config)
        try:
            switched = self.switchboard.adopt_config(config, also=self.registry.config_change(plan))
        except BaseException:
            self.registry.discard(plan)
            raise
        self.registry.finish_config(plan)
        self.inference.cache.resize(cache_bytes)
        self.alerts.reconfigure(config.alerts)
        self.periodic.reconfigure(config.bench)
        self.admission.set_limits(limits)
        # Files a loaded version's features came from, replaced since (a corpus renamed into
        # place): re-opened before the answer, so the next search sees them.
        refreshed = self.registry.refresh_attachments()
        # A switch the file asked for that failed last time is tried again (its cause may be
        # fixed: a corpus built, a load that failed) while the file still asks for it.
        # Only while nothing else moved the model since (a hand-made switch or rollout wins).
        routes = self.registry.published.current.routes
        switched += sorted(
            model for model, route in self._config_switch_failed.items()
            if model not in switched and model in config.models and routes.get(model) == route and config.models[model].active != route.active
        )
        switch_failed = {model: why for model in switched if (why := self._switch_from_config(model))}
        routes = self.registry.published.current.routes
        self._config_switch_failed = {model: routes[model] for model in switch_failed if model in routes}
        self._submit_control(self._preload_then_ready)  # versions the file now asks to preload
        http_failed, restart_needed, http_live = self._reload_http(config)
        restart_needed = [*restart_needed, "fleet"] if fleet_changed else restart_needed
        self.state.restart_needed = restart_needed  # `hs status` says so until the next start
        summary = {
            "removed": plan.removed, "reloaded": plan.reloaded, "applied_live": plan.live + http_live, "switching": switched, "restart_needed": restart_needed,
            "refreshed": refreshed,
        }
        failed = {**plan.failed, **switch_failed, **http_failed}
        self.audit.record("config_applied", trigger=trigger, **summary, failed=failed or None)
        log.info("config applied (%s): %s", trigger, summary)
        return {"applied": True, **summary, "failed": failed}

    def _reload_http(self, config: Config) -> tuple[dict[str, str], list[str], list[str]]:
        """The HTTP endpoint's keys, re-read now (revoking a key is the point of editing the
        file); the other ``[http]`` changes, including an endpoint the file now asks for,
        named as needing a restart (the router's socket, which the endpoint's bridge binds,
        belongs to the router thread). Returns what failed, what needs a restart, and what
        was applied live."""
        if self.http is None:
            asks = bool(config.http.listen) and self._http_listen_flag is None
            if asks:
                log.warning("http: listen = %s is set; the endpoint starts on the next start", config.http.listen)
            return {}, ["http.listen"] if asks else [], []
        settings = config.http
        if self._http_listen_flag is not None:  # `--http HOST:PORT` stays where it was started
            settings = settings.model_copy(update={"listen": self._http_listen_flag})
        try:
            restart = self.http.reload(settings, config.base_dir)
        except ConfigError as exc:
            log.error("http: the new API keys cannot be read; the keys in force stay: %s", exc.message)
            # What needed a restart still does: this reload compared nothing else.
            return {"http.api_keys": exc.message}, self.state.restart_needed, []
        if restart:
            log.warning("http: %s changed; it takes effect on the next start", ", ".join(restart))
        return {}, restart, []

    def _on_audit_event(self, event: str, **fields: Any) -> None:
        self.metrics.record_event(event, **fields)
        self.alerts.notify(event, **fields)

    def _switch_from_config(self, model: str) -> str | None:
        """Switch ``model`` to its file's `active`; None when done, else why not."""
        model_cfg = self.registry.config.models.get(model)
        if model_cfg is None:
            return None
        request = SwitchRequest(model, model_cfg.active, strategy=model_cfg.rollout.strategy, trigger="config")
        try:
            self.switchboard.switch(request)
        except HotswapError as exc:
            log.error("switch of %s to %s from the config failed; the old version keeps serving: %s", model, model_cfg.active, exc.message)
            return exc.message
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = args.config or os.environ.get(CONFIG_ENV)
        origin = origin_for(spec, default_config_path(), missing_ok=config_may_be_missing(args.config))
        config = origin.load()
        endpoint = resolve_endpoint(args.socket)
        http = http_settings(config, args.http)
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
    if config.daemon.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(config.daemon.torch_threads)
    memory.few_heaps()
    tracing_setup.configure_from_environment()  # off unless OTEL_* asks
    log.info("hotswapd %s starting (pid %d, config %s)", __version__, os.getpid(), config.path or (origin.name if not origin.is_file else "built-in default"))
    try:
        return Daemon(config, origin, endpoint, args.drain_seconds, http).run()
    except HotswapError as exc:
        log.error("%s", exc.message)
        return 1
    except zmq.ZMQError as exc:
        log.error("cannot serve %s: %s", endpoint, exc)
        return 1
    finally:
        tracing_setup.shutdown()  # the spans still batched go out


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
