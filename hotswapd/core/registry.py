"""Which model versions are loaded, and loading them on demand.

The registry knows backends only through :func:`hotswapd.backends.get_loader`, and knows
nothing of which version is active (that is :mod:`hotswapd.core.switching`). Which
versions are loaded is part of the published snapshot (:mod:`hotswapd.core.snapshot`):
a load, an unload or a reload is seen by every reader at once, together with the config it
was made for.

Leases: a request that picked a version takes a lease on its :class:`LoadedVersion` and
returns it when its reply is built. Unloading (evict, ttl, memory budget, reload, a
version removed from the config) only *retires* a version: it takes no new leases, and
its embedder is closed when the last lease is returned. Until then the memory budget
keeps counting it, so an eviction or reload never breaks a request in flight and never
frees memory on paper that queued requests still hold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil

from hotswapd.backends import Capabilities, get_loader, import_libraries
from hotswapd.config.schema import LIVE_FIELDS, Config, ModelConfig, VersionConfig
from hotswapd.core import memory
from hotswapd.core.bounded import run_bounded
from hotswapd.core.leases import Leases
from hotswapd.core.load_progress import LoadSteps
from hotswapd.pipeline.loaded import LoadedVersion, Slot, apply_live, changed_fields, split_spec
from hotswapd.core.reconfiguration import Reconfiguration, version_spec
from hotswapd.core.seams import Assembler, Seams
from hotswapd.core.snapshot import Published, Snapshot
from hotswapd.errors import HotswapError, ModelLoadError, UnknownModel, UnknownVersion
from hotswapd.host import load_steps
from hotswapd.sources.fingerprint import fingerprint
from hotswapd.text.prompts import text_prep

log = logging.getLogger(__name__)
T = TypeVar("T")

EventSink = Callable[..., Any]


DRAIN_WAIT_SECONDS = 30.0  # how long a load waits for retired versions to free their memory


class Registry(Leases):
    def __init__(
        self,
        config: Config,
        on_event: EventSink | None = None,
        closer: Callable[[Callable[[], None]], None] | None = None,
        published: Published | None = None,
        seams: Seams | None = None,
    ) -> None:
        # What features add to each version (its corpus) and the kinds of version they
        # assemble (ensembles): wired by the composition root, hotswapd.daemon.main.
        self.seams = seams or Seams()
        # The serving state (config, routes, loaded versions) is published whole; the
        # switchboard shares this one owner.
        self.published = published or Published(config)
        # Per-version load locks and failure counts: how loads happen, not what serves.
        self._slots: dict[tuple[str, str], Slot] = {}
        # Guards slots, leases and the retired list; never held across I/O or a load.
        self._guard = threading.Condition(threading.Lock())
        self._process = psutil.Process()
        self._on_event = on_event or (lambda event, **fields: None)
        # Closing a retired version (gc + malloc_trim) is slow: it runs where the daemon
        # says (a housekeeping thread), never on the thread that returned the last lease.
        self._closer = closer or (lambda work: work())
        # Memory decisions (what to evict, what a load may count on) are made one at a
        # time; the slow part of a load runs outside this lock on a reservation.
        self._budget_lock = threading.Lock()
        self._reserved: dict[tuple[str, str], int] = {}
        self._retired: list[LoadedVersion] = []  # unloaded, waiting for their last lease
        self._measured: dict[tuple[str, str], int] = {}
        self._stopping = threading.Event()  # loads in progress stop waiting
        self._evicted: dict[tuple[str, str], dict[str, Any]] = {}
        # The step each load (or switch) is on now: what `hs` shows while it waits.
        self.steps = LoadSteps()

    @property
    def config(self) -> Config:
        """The config in force (of the snapshot in force)."""
        return self.published.current.config

    def resolve(self, spec: str | None, snapshot: Snapshot | None = None) -> tuple[str, ModelConfig, str | None]:
        """The model a request means, and the version it pins (None: let routing choose)."""
        config = (snapshot or self.published.current).config
        name, version = split_spec(spec)
        chosen = name or config.default_model
        if chosen is None:
            raise UnknownModel(f"no model named and no default model; configured: {_configured(config)}")
        model = config.models.get(chosen)
        if model is None:
            raise UnknownModel(f"unknown model {chosen!r}; configured: {_configured(config)}")
        if version is not None and version not in model.versions:
            raise UnknownVersion(f"model {chosen!r} has no version {version!r}; versions: {', '.join(model.versions)}")
        return chosen, model, version

    def pinned_or_active(self, spec: str | None) -> tuple[str, str]:
        """The model a request names and the version it pins, else the active one (one snapshot)."""
        snap = self.published.current
        name, _, pinned = self.resolve(spec, snap)
        return name, pinned or snap.routes[name].active

    def _slot(self, model: str, version: str) -> Slot:
        with self._guard:
            return self._slots.setdefault((model, version), Slot())

    def get(self, model: str, version: str) -> LoadedVersion:
        """A loaded version, loading it first if needed. Without a lease it may be retired
        at any moment: callers that run inference on it use :meth:`lease`."""
        self._spec(model, version)  # a version not (or no longer) configured gets no slot
        loaded = self.peek(model, version)
        if loaded is None:
            slot = self._slot(model, version)
            failures = slot.failures
            with slot.lock:
                loaded = self.peek(model, version)
                if loaded is None:
                    if slot.failures != failures and slot.last_error is not None:
                        # The load this caller queued behind has just failed: share its
                        # answer instead of trying again, once per waiting request.
                        raise ModelLoadError(f"loading {model}@{version} failed: {slot.last_error}")
                    loaded = self._load_into(slot, model, version)
        loaded.last_used = time.time()
        return loaded

    def peek(self, model: str, version: str) -> LoadedVersion | None:
        return self.published.current.peek(model, version)

    def last_error(self, model: str, version: str) -> str | None:
        slot = self._slots.get((model, version))
        return slot.last_error if slot else None

    def _spec(self, model: str, version: str) -> VersionConfig:
        model_cfg = self.config.models.get(model)
        if model_cfg is None or version not in model_cfg.versions:
            raise UnknownVersion(f"{model}@{version} is not in the config")
        return model_cfg.versions[version]

    def _load_into(self, slot: Slot, model: str, version: str) -> LoadedVersion:
        loaded = self._load(slot, model, version, self._spec(model, version))
        replaced = self._place(slot, model, version, loaded)
        if replaced is not None and replaced is not loaded:  # a reload published a copy meanwhile
            self._retire(replaced, "reload")
        return loaded

    def _place(self, slot: Slot, model: str, version: str, loaded: LoadedVersion) -> LoadedVersion | None:
        """Publish a fresh load; returns what it replaced. A version removed from the config
        while it loaded, or whose computing options a reload changed meanwhile, is retired at
        once (closed after the requests that wait on it; they load it again)."""
        key = (model, version)
        orphaned, replaced = False, None

        def change(snap: Snapshot) -> Snapshot:
            nonlocal orphaned, replaced
            model_cfg = snap.config.models.get(model)
            spec = model_cfg.versions.get(version) if model_cfg else None
            with self._guard:
                # An ensemble whose member was retired while it assembled would serve it forever.
                orphaned = (
                    self._slots.get(key) is not slot
                    or spec is None
                    or not changed_fields(loaded.config, spec) <= LIVE_FIELDS
                    or any(m.retired for m in loaded.members)
                )
            if orphaned:
                return snap
            if spec is not None and loaded.config != spec:
                apply_live(loaded, spec)
            replaced = snap.peek(model, version)
            return snap.with_loaded(key, loaded)

        self.published.publish(change)
        if orphaned:
            self._retire(loaded, "unload")
        return replaced

    # -- loading -------------------------------------------------------------------------
    def _load(self, slot: Slot, model: str, version: str, spec: VersionConfig) -> LoadedVersion:
        assembler = self.seams.assemblers.get(spec.backend)
        if assembler is not None:
            return self._assemble(slot, model, version, spec, assembler)
        log.info("loading %s@%s (%s from %s)", model, version, spec.backend, spec.source)
        started = time.perf_counter()
        key = (model, version)
        self.steps.note(key, "resolving the source")
        try:
            # Downloads a remote source (and a corpus); what hooks attach counts in the budget too.
            path, extra_bytes = self._bounded(
                lambda: (spec.resolve(spec.source), sum(hook.expected_bytes(spec) for hook in self.seams.version_hooks)), f"{model}@{version}", started
            )
            text = text_prep(spec.prompts, spec.default_prompt, spec.preprocess, path)  # before the model: a bad default fails first
            on_disk = memory.files_size(path)
            need = memory.estimate(spec, on_disk, self._measured.get(key)) + extra_bytes
            # Room is made and reserved under the budget lock; the slow part (imports, fingerprint,
            # export, weights) and any wait for draining versions run outside it.
            deadline = time.monotonic() + DRAIN_WAIT_SECONDS
            while True:
                with self._budget_lock:
                    made = self._make_room(model, version, need, waiting_allowed=time.monotonic() < deadline)
                    if made:
                        self._reserved[key] = self._reserved.get(key, 0) + need
                        break
                with self._guard:
                    self._guard.wait(0.05)  # a retiring version gives its memory back
            try:
                self.steps.note(key, f"importing {spec.backend}")
                import_libraries(spec.backend)
                rss_before = self._process.memory_info().rss
                digest, embedder = self._bounded(lambda: self._read(key, path, spec), f"{model}@{version}", started)
            finally:
                with self._budget_lock:
                    left = self._reserved.pop(key, 0) - need
                    if left > 0:
                        self._reserved[key] = left
            caps = _capabilities(embedder)  # a backend's extras may fail too: a failed load, closed
        except HotswapError as exc:
            self._failed(slot, model, version, exc.message)
            raise
        except Exception as exc:  # a backend library can fail in ways we cannot enumerate
            log.exception("loading %s@%s failed", model, version)
            self._failed(slot, model, version, f"{type(exc).__name__}: {exc}")
            raise ModelLoadError(f"loading {model}@{version} failed: {slot.last_error}") from exc
        finally:
            self.steps.clear(key)
        seconds = time.perf_counter() - started
        measured = max(0, self._process.memory_info().rss - rss_before)
        # A backend that knows better (a remote endpoint holds nothing here) says so.
        # An RSS delta reads low when the load reuses pages the allocator kept from an
        # earlier unload, or maps weights lazily: a version counts at least its files'
        # size and the largest size ever measured for it.
        declared = caps.memory_bytes
        used = declared if declared is not None else max(measured, on_disk, self._measured.get(key, 0))
        self._measured[key] = used
        if spec.ram_gb is not None:  # the operator's figure wins over a noisy RSS delta
            used = int(spec.ram_gb * memory.GB)
        self._evicted.pop(key, None)
        slot.last_error = None
        log.info(
            "loaded %s@%s in %.2f s (+%.0f MiB RSS, counted as %.0f MiB; weights %s)", model, version, seconds, measured / 2**20, used / 2**20, digest
        )
        loaded = LoadedVersion(model, version, spec, embedder, digest, time.time(), seconds, used, text=text, caps=caps)
        self._attach(loaded)
        self._on_event("load", model=model, version=version, seconds=round(seconds, 3), fingerprint=loaded.fingerprint, weights=digest)
        return loaded

    def _read(self, key: tuple[str, str], path: Any, spec: VersionConfig) -> tuple[str, Any]:
        """The weights' fingerprint and the backend's embedder (on the bounded load thread),
        each step the backend names reported as this version's."""
        with load_steps.reporting(self.steps.reporter(key)):
            load_steps.report("reading the weights")
            digest = fingerprint(path)
            load_steps.report("loading")
            return digest, get_loader(spec.backend)(path, spec)

    def _attach(self, loaded: LoadedVersion) -> None:
        """What each feature adds to a version just loaded (its corpus); a hook that fails
        costs its own part, never the load."""
        for hook in self.seams.version_hooks:
            try:
                hook.on_load(loaded, self._on_event)
            except Exception:  # noqa: BLE001 -- a feature's failure is its own
                log.exception("%s@%s: the %s hook failed", loaded.model, loaded.version, hook.name)

    def refresh_attachments(self, loaded: LoadedVersion | None = None) -> list[str]:
        """Every feature checks its part of each loaded version (or of ``loaded``) against
        the files it came from (a corpus replaced on disk) and swaps in what changed; what
        changed, as "MODEL@VERSION: what". On a reload, on the ticker, before a search."""
        done: list[str] = []
        for item in [loaded] if loaded is not None else list(self.published.current.loaded.values()):
            for hook in self.seams.version_hooks:
                try:
                    what = hook.refresh(item, self._on_event)
                except Exception:  # noqa: BLE001 -- a feature's failure is its own
                    log.exception("%s@%s: the %s hook's refresh failed", item.model, item.version, hook.name)
                    continue
                if what:
                    done.append(f"{item.model}@{item.version}: {hook.name} {what}")
        return done

    def on_event(self, event: str, **fields: object) -> None:
        """The audit sink the registry reports to, for features that act on a loaded version."""
        self._on_event(event, **fields)

    def _assemble(self, slot: Slot, model: str, version: str, spec: VersionConfig, assembler: Assembler) -> LoadedVersion:
        """A version built from others (an ensemble): its members leased (loaded if need be)
        for as long as it is loaded."""
        try:
            loaded = assembler(model, version, spec, self.lease, self.release)
        except HotswapError as exc:
            self._failed(slot, model, version, exc.message)
            raise
        self._evicted.pop((model, version), None)
        slot.last_error = None
        self._attach(loaded)  # an ensemble's own corpus (hs index build -m ENSEMBLE)
        self._on_event("load", model=model, version=version, seconds=round(loaded.load_seconds, 3), fingerprint=loaded.fingerprint, weights=loaded.weights)
        return loaded

    def _bounded(self, work: Callable[[], T], what: str, started: float) -> T:
        return run_bounded(work, what, started, self.config.daemon.load_timeout_seconds, self._stopping)

    def _make_room(self, model: str, version: str, need: int, waiting_allowed: bool) -> bool:
        """Evict idle versions until ``need`` more bytes fit (call with the budget lock held).
        Retired versions still draining their leases count until they are closed: when only
        they stand in the way and ``waiting_allowed``, return False for the caller to wait."""
        budget = self.config.memory
        if budget.max_gb is None and budget.min_free_gb is None:
            return True
        loaded = [item for k, item in self.published.current.loaded.items() if k != (model, version)]
        with self._guard:
            draining = list(self._retired)
            busy = memory.in_use(loaded)
        over = memory.bytes_over(budget, [*loaded, *draining, *self._reservations()], need)
        if over <= 0:
            return True
        evictable = sum(item.memory_bytes for item in loaded if not item.config.pinned and id(item) not in busy)
        if evictable < over and draining and waiting_allowed:
            return False
        for victim in memory.victims(budget, loaded, over, busy, f"{model}@{version}", draining):
            why = f"memory budget ({budget.policy}): made room for {model}@{version}"
            self.unload(victim.model, victim.version, "memory", why)
        return True

    def _reservations(self) -> list[memory.Reservation]:
        return [memory.Reservation(f"{m}@{v}", size) for (m, v), size in self._reserved.items()]

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Unload versions of models with a ``ttl`` that have been unused that long."""
        now = time.time() if now is None else now
        expired = []
        for item in self.loaded():
            model_cfg = self.config.models.get(item.model)
            ttl = model_cfg.ttl if model_cfg else None
            if ttl is not None and item.leases == 0 and now - item.last_used >= ttl:
                if self.unload(item.model, item.version, "ttl", f"ttl: unused for {ttl:g} s"):
                    expired.append(f"{item.model}@{item.version}")
        return expired

    def evictions(self) -> list[dict[str, Any]]:
        """Versions unloaded by the budget, a ttl or `hs evict`, and why (until they load again)."""
        return [{"model": m, "version": v, **info} for (m, v), info in sorted(self._evicted.items())]

    def _failed(self, slot: Slot, model: str, version: str, reason: str) -> None:
        slot.last_error = reason
        slot.failures += 1
        log.error("loading %s@%s failed: %s", model, version, reason)
        self._on_event("load_failed", model=model, version=version, reason=reason)

    def reload(self, model: str, version: str) -> LoadedVersion:
        """Load a fresh copy (new options) while the old one keeps serving, then swap them."""
        slot = self._slot(model, version)
        with slot.lock:
            fresh = self._load(slot, model, version, self._spec(model, version))
            old = self._place(slot, model, version, fresh)
        if old is not None:
            self._retire(old, "reload")
        return fresh

    def unload(self, model: str, version: str, reason: str = "unload", why: str | None = None) -> bool:
        old: LoadedVersion | None = None

        def change(snap: Snapshot) -> Snapshot:
            nonlocal old
            old = snap.peek(model, version)
            return snap if old is None else snap.with_loaded((model, version), None)

        self.published.publish(change)
        if old is None:
            return False
        if reason in ("evict", "memory", "ttl"):
            self._evicted[(model, version)] = {"reason": why or "hs evict", "at": time.time()}
        self._retire(old, reason)
        return True

    def evict(self, model: str) -> list[str]:
        """Unload every loaded version of a model; returns the versions unloaded."""
        versions = sorted(version for (name, version) in self.published.current.loaded if name == model)
        return [version for version in versions if self.unload(model, version, "evict")]

    def _retire(self, loaded: LoadedVersion, reason: str) -> None:
        """No new leases; close now if none is held, else when the last one comes back."""
        with self._guard:
            if loaded.retired:  # at shutdown an ensemble goes with its first member, then comes up again
                return
            loaded.retired = True
            close_now = loaded.leases <= 0 and not loaded.closed
            if close_now:
                loaded.closed = True
            else:
                self._retired.append(loaded)
        log.info("unloading %s@%s (%s)%s", loaded.model, loaded.version, reason, "" if close_now else f" after its {loaded.leases} request(s) in flight")
        self._on_event(reason, model=loaded.model, version=loaded.version)
        if close_now:
            self._closer(lambda: self._close(loaded))
        for ensemble in [item for item in self.loaded() if any(m is loaded for m in item.members)]:
            # It would go on serving the old member: it is assembled again on its next request.
            self.unload(ensemble.model, ensemble.version, "unload", f"member {loaded.model}@{loaded.version} unloaded")

    def _close(self, loaded: LoadedVersion) -> None:
        try:
            loaded.close()
        except Exception:  # closing must never take the daemon down
            log.exception("closing %s@%s failed", loaded.model, loaded.version)
        memory.give_back(loaded.memory_bytes)
        with self._guard:
            if loaded in self._retired:
                self._retired.remove(loaded)
            self._guard.notify_all()  # a load waiting for drained memory may go on
        log.debug("closed %s@%s", loaded.model, loaded.version)

    def draining(self) -> list[LoadedVersion]:
        """Retired versions still held by requests in flight (the budget counts them)."""
        with self._guard:
            return list(self._retired)

    # -- a new config ---------------------------------------------------------------------
    def prepare_config(self, config: Config) -> Reconfiguration:
        """Load a fresh copy of every loaded version whose computing options ``config``
        changes, while the old copy keeps serving (slow: call it off the socket thread).
        Nothing is published here: :meth:`config_change` publishes them with the config."""
        plan = Reconfiguration(config)
        for (model, version), loaded in sorted(self.published.current.loaded.items()):
            spec = version_spec(config, model, version)
            if spec is None or changed_fields(loaded.config, spec) <= LIVE_FIELDS:
                continue
            if loaded.members or spec.backend in self.seams.assemblers:
                # Its members are leased from the config in force, which is still the old
                # one here: it leaves the snapshot instead, assembled anew on its next request.
                continue
            log.info("%s@%s reloads: %s changed", model, version, ", ".join(sorted(changed_fields(loaded.config, spec) - LIVE_FIELDS)))
            slot = self._slot(model, version)
            try:
                with slot.lock:
                    plan.fresh[(model, version)] = self._load(slot, model, version, spec)
            except HotswapError as exc:
                plan.failed[f"{model}@{version}"] = exc.message
                log.error("reloading %s@%s with its new options failed; the old one keeps serving: %s", model, version, exc.message)
        return plan

    def config_change(self, plan: Reconfiguration) -> Callable[[Snapshot], Snapshot]:
        """The registry's part of publishing ``plan.config``: versions it removed leave,
        fresh copies replace the versions they were loaded for, serving-only fields are
        taken in place. Pure in-memory work, for :meth:`Published.publish`."""

        def change(snap: Snapshot) -> Snapshot:
            loaded = dict(snap.loaded)
            for key, item in snap.loaded.items():
                spec = version_spec(plan.config, *key)
                if spec is None:
                    del loaded[key]
                    plan.removed.append(f"{key[0]}@{key[1]}")
                    plan.retire.append((item, "unload"))
                elif key in plan.fresh:
                    plan.retire.append((item, "reload"))
                elif item.config != spec and changed_fields(item.config, spec) <= LIVE_FIELDS:
                    plan.live.append(f"{key[0]}@{key[1]} ({', '.join(sorted(changed_fields(item.config, spec)))})")
                    apply_live(item, spec)
                elif item.config != spec and f"{key[0]}@{key[1]}" not in plan.failed:
                    # Loaded with the old options after prepare_config looked (a request's
                    # load finished meanwhile), or an ensemble: it must not serve the new
                    # config with the old options, so it leaves now and loads on next use.
                    del loaded[key]
                    plan.retire.append((item, "reload"))
                    plan.reloaded.append(f"{key[0]}@{key[1]} (on next use)")
            for key, fresh in plan.fresh.items():
                loaded[key] = fresh
                plan.reloaded.append(f"{key[0]}@{key[1]}")
            return snap.with_all_loaded(loaded)

        return change

    def finish_config(self, plan: Reconfiguration) -> None:
        """After ``plan`` was published: close what it replaced or removed (after their
        requests in flight), and forget the load state of versions no longer configured."""
        with self._guard:
            for key in [key for key in self._slots if version_spec(plan.config, *key) is None]:
                del self._slots[key]
        for item, reason in plan.retire:
            self._retire(item, reason)

    def discard(self, plan: Reconfiguration) -> None:
        """A config that was not published after all: its fresh copies are closed."""
        for item in plan.fresh.values():
            self._retire(item, "unload")

    def loaded(self) -> list[LoadedVersion]:
        return list(self.published.current.loaded.values())

    def stop_loading(self) -> None:
        """Loads in progress give up waiting (the daemon is stopping)."""
        self._stopping.set()

    def close(self) -> None:
        """At shutdown: close everything, draining versions included (no request is left)."""
        self._stopping.set()
        self._closer = lambda work: work()
        for loaded in self.loaded():
            self._retire(loaded, "unload")
        with self._guard:
            left = [item for item in self._retired if not item.closed]
            for item in left:
                item.closed = True
        for item in left:
            self._close(item)


def _capabilities(embedder: Any) -> Capabilities:
    """What the embedder offers, read now, inside the load: an extra that raises (a plugin's
    property) fails the load and the embedder is closed, instead of failing every request."""
    try:
        return Capabilities.of(embedder)
    except BaseException:
        try:
            embedder.close()
        except Exception:  # noqa: BLE001 -- the load's own failure is what is reported
            log.exception("closing an embedder whose load failed")
        raise


def _configured(config: Config) -> str:
    return ", ".join(sorted(config.models)) or "(none)"

