"""Periodic comparative benchmarks while serving.

The ticker asks :meth:`PeriodicBench.tick` whether a round is due (``every_requests`` admitted
requests or ``every_seconds`` since the last round); a due round runs on the ``bench`` worker.
Each version is measured through the registry (a lease, so it is not closed under the round)
and on the inference thread (``Inference.call``: never beside a live batch), in slices of a
few texts. Before every slice the round waits until no request is queued and none has
arrived for ``idle_ms``, and it spaces slices so that they take at most ``max_share`` of the
wall clock. A live request can therefore wait behind at most one slice, and only rarely.

Each round appends one row per version to ``bench.jsonl`` (marked ``periodic``) with its
agreement with the model's active version and whether it is the round's recommendation; a
version much slower than its own recent rounds raises the ``bench_regression`` audit event
(and so an alert).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotswapd.benchmarking import history
from hotswapd.config.bench_section import BenchConfig
from hotswapd.config.ensemble_section import ENSEMBLE
from hotswapd.errors import HotswapError
from hotswapd.text.probe_texts import PROBE_TEXTS

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from hotswapd.config.schema import VersionConfig
    from hotswapd.core.admission import Admission
    from hotswapd.core.audit import AuditLog
    from hotswapd.pipeline.inference import Inference
    from hotswapd.pipeline.loaded import LoadedVersion
    from hotswapd.core.registry import Registry
    from hotswapd.core.switching import Switchboard

log = logging.getLogger(__name__)
SINGLES = 8  # single-text calls per version: the latency figures
REMOTE = frozenset({"openai", "sagemaker"})  # measured only when named: each call is a paid request


def probe_set() -> list[str]:
    """64 fixed texts of varied length: the probe texts, pairs and triples of them, passages."""
    texts, n = list(PROBE_TEXTS), len(PROBE_TEXTS)
    for i, first in enumerate(PROBE_TEXTS):
        texts.append(f"{first} {PROBE_TEXTS[(i * 7 + 3) % n]}")
        texts.append(f"{first} {PROBE_TEXTS[(i * 5 + 1) % n]} {PROBE_TEXTS[(i * 3 + 2) % n]}")
        texts.append(" ".join(PROBE_TEXTS[i:] + PROBE_TEXTS[:i])[:600])
    return texts[:64]


class RoundAbandoned(Exception):
    """The daemon is stopping, or was never idle enough to finish the round in time."""


class VersionGone(Exception):
    """The version was unloaded during the round: it is not held loaded just to be measured."""


@dataclass
class Measured:
    loaded: LoadedVersion
    singles_ms: list[float]
    texts_per_s: float
    vectors: np.ndarray


class PeriodicBench:
    def __init__(
        self, settings: BenchConfig, registry: Registry, switchboard: Switchboard, inference: Inference, admission: Admission, audit: AuditLog,
        submit: Callable[[Callable[[], None]], object], stop: threading.Event, path: Path | None = None,
        on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._on_rows = on_rows or (lambda rows: None)  # the metrics' gauges
        self._settings = settings
        self._registry, self._switchboard, self._inference, self._admission, self._audit = registry, switchboard, inference, admission, audit
        self._submit = submit
        self._stop = stop
        self._path = path or history.history_path()
        self._running = threading.Event()
        self._last_round = time.monotonic()
        self._requests_at_last = 0
        self._next_slice = 0.0
        self._leases_taken: Counter[int] = Counter()
        self.rounds = 0  # finished rounds (status, tests)
        self.last_problem: str | None = None
        self._last_round_at: float | None = None  # wall clock, for `hs status`

    def reconfigure(self, settings: BenchConfig) -> None:
        self._settings = settings

    def describe(self) -> dict[str, Any] | None:
        """For `hs status`: None when off."""
        if not self._settings.enabled:
            return None
        return {"running": self._running.is_set(), "rounds": self.rounds, "last_round_at": self._last_round_at, "last_problem": self.last_problem}

    def tick(self) -> None:
        """On the ticker thread: start a round on the bench worker if one is due."""
        settings = self._settings
        if not settings.enabled or self._running.is_set():
            return
        requests = self._admission.admitted - self._requests_at_last
        due_by_requests = settings.every_requests is not None and requests >= settings.every_requests
        due_by_time = settings.every_seconds is not None and time.monotonic() - self._last_round >= settings.every_seconds
        if due_by_requests or due_by_time:
            self._running.set()
            self._submit(self._round_guarded)

    def _round_guarded(self) -> None:
        try:
            self.run_round()
        except RoundAbandoned as exc:
            self.last_problem = str(exc)
            log.info("periodic benchmark round abandoned: %s", exc)
        except Exception as exc:  # noqa: BLE001 -- the next round runs as usual
            self.last_problem = f"{type(exc).__name__}: {exc}"
            log.exception("periodic benchmark round failed")
        finally:
            self._last_round = time.monotonic()
            self._last_round_at = time.time()
            self._requests_at_last = self._admission.admitted
            self._running.clear()

    def run_round(self) -> list[dict[str, Any]]:
        settings = self._settings  # a reload mid-round applies to the next one (idle_ms, max_share: at once)
        started = time.monotonic()
        texts = probe_set()
        measured: list[Measured] = []
        borrowed: list[LoadedVersion] = []  # loaded for this round (load = true): unloaded after it
        self._leases_taken: Counter[int] = Counter()  # the round's own, per loaded version
        try:
            for model, version in self.targets():
                loaded = self._loaded(model, version, borrowed)
                if loaded is None:
                    continue
                try:
                    measured.append(self._measure(loaded, texts, started, settings))
                except VersionGone:
                    log.info("periodic benchmark: %s@%s was unloaded during the round; left out", model, version)
                except HotswapError as exc:  # one version's failure costs only its own row
                    log.warning("periodic benchmark: %s@%s left out: %s", model, version, exc.message)
        finally:  # a round abandoned part way still records the versions it measured in full
            self._give_back(borrowed)
            rows = self._record(measured, settings)
        self.rounds += 1
        self.last_problem = None
        return rows

    def _loaded(self, model: str, version: str, borrowed: list[LoadedVersion]) -> LoadedVersion | None:
        """The loaded version (no lease is kept: each slice takes its own, so a round waiting
        for quiet holds nothing the memory budget or a reload needs)."""
        loaded = self._registry.peek(model, version)
        if loaded is not None or not self._settings.load:
            return loaded
        before = {id(item) for item in self._registry.loaded()}
        try:
            with self._registry.leased(model, version) as loaded:
                self._leases_taken[id(loaded)] += 1
        except HotswapError as exc:
            log.warning("periodic benchmark: %s@%s did not load: %s", model, version, exc.message)
            return None
        borrowed.extend(item for item in self._registry.loaded() if id(item) not in before)  # an ensemble's members too
        return loaded

    def _give_back(self, borrowed: list[LoadedVersion]) -> None:
        """Unload what the round loaded, unless live traffic has since come to depend on it:
        a version made active or a rollout target, or a member of an ensemble the round did not load."""
        serving = set()
        for name in self._registry.config.models:
            routing = self._switchboard.describe(name) or {}
            serving.update({(name, routing.get("active")), (name, (routing.get("rollout") or {}).get("target"))})
        others = [item for item in self._registry.loaded() if all(item is not mine for mine in borrowed)]
        held = {id(member) for item in others for member in item.members}
        ours = Counter(id(member) for item in borrowed for member in item.members)  # assembly leases
        for item in sorted(borrowed, key=lambda item: not item.members):  # ensembles first
            used_by_others = item.leases_taken > self._leases_taken.get(id(item), 0) + ours[id(item)]
            if self._registry.peek(item.model, item.version) is item and (item.model, item.version) not in serving and id(item) not in held and not used_by_others:
                self._registry.unload(item.model, item.version, "unload", "loaded for a periodic benchmark round")

    def _record(self, measured: list[Measured], settings: BenchConfig) -> list[dict[str, Any]]:
        rows = self._rows(measured, settings)
        if rows:
            try:
                past = history.read_history(self._path)
            except HotswapError as exc:  # unreadable: no baseline this time; append may rotate it
                log.warning("periodic benchmark: %s", exc.message)
                past = []
            self._flag_regressions(rows, past, settings)
            self._on_rows(rows)
            history.append(self._path, rows)
        return rows

    def targets(self) -> list[tuple[str, str]]:
        """The configured versions, or each model's active one, its rollout target and the
        other versions loaded (remote backends only when named)."""
        config = self._registry.config
        if self._settings.versions is not None:
            named = [tuple(spec.split("@", 1)) for spec in self._settings.versions]
            return [(m, v) for m, v in named if m in config.models and v in config.models[m].versions]
        loaded = {(item.model, item.version) for item in self._registry.loaded()}
        out = []
        for name, model in config.models.items():
            routing = self._switchboard.describe(name) or {}
            active = routing.get("active", model.active)
            target = (routing.get("rollout") or {}).get("target")
            for version, spec in model.versions.items():
                wanted = version in (active, target) or (name, version) in loaded
                if wanted and not self._remote(spec):
                    out.append((name, version))
        return out

    def _remote(self, spec: VersionConfig) -> bool:
        if spec.backend != ENSEMBLE:
            return spec.backend in REMOTE
        models = self._registry.config.models
        return any(
            m.model in models and m.version in models[m.model].versions and models[m.model].versions[m.version].backend in REMOTE
            for m in spec.options.members  # type: ignore[attr-defined]
        )

    def _measure(self, loaded: LoadedVersion, texts: list[str], started: float, settings: BenchConfig) -> Measured:
        import numpy as np

        prepared = list(texts)  # each slice runs the pipeline: the version's prompt, length plan, checks
        singles = []
        for text in prepared[:SINGLES]:
            seconds, _ = self._slice(loaded, [text], started)
            singles.append(seconds * 1000)
        spent, blocks = 0.0, []
        for first in range(0, len(prepared), settings.batch_size):
            seconds, vectors = self._slice(loaded, prepared[first : first + settings.batch_size], started)
            spent += seconds
            blocks.append(vectors)
        vectors = np.vstack(blocks)
        if not np.isfinite(vectors).all():
            raise HotswapError(f"{loaded.model}@{loaded.version} returned NaN or infinite vectors on the probe set")
        return Measured(loaded, singles, len(prepared) / max(spent, 1e-9), vectors)

    def _slice(self, loaded: LoadedVersion, texts: list[str], started: float) -> tuple[float, np.ndarray]:
        """One encode through the pipeline, on the inference thread under its own lease, once
        the daemon is idle (what the version serves: its prompt and length policy included)."""
        from hotswapd.pipeline.encoding import EncodeJob, encode_here

        self._wait_for_idle(started, loaded)
        leased = self._registry.try_lease(loaded.model, loaded.version)
        if leased is loaded:
            self._leases_taken[id(loaded)] += 1
        else:  # unloaded, or reloaded as another copy, since the last slice
            if leased is not None:
                self._registry.release(leased)
            raise VersionGone
        timing: list[float] = []

        def work() -> np.ndarray:
            begun = time.perf_counter()
            try:
                # The probe set holds passages: a version that refuses long texts in requests
                # has them cut here, as the daemon's other probes do.
                policy = "truncate" if loaded.config.long_text == "error" else None
                return encode_here(EncodeJob(loaded, texts, True, long_text=policy)).vectors
            finally:
                timing.append(time.perf_counter() - begun)

        future = self._inference.call_soon(work)
        future.add_done_callback(lambda _: self._registry.release(loaded))  # also when given up on, once it ends
        while True:  # waiting in steps: a slice stuck in a hung model must not hold up a stop
            try:
                vectors = future.result(timeout=0.1)
                break
            except FutureTimeout:
                if self._stop.is_set():
                    raise RoundAbandoned("the daemon is stopping") from None
        seconds = timing[0]
        # Spaced so that slices take at most max_share of the wall clock.
        self._next_slice = time.monotonic() + seconds * (1 / self._settings.max_share - 1)
        return seconds, vectors

    def _wait_for_idle(self, started: float, loaded: LoadedVersion) -> None:
        while True:
            if loaded.retired:  # evicted or reloaded meanwhile: let it close now, not after the round
                raise VersionGone
            settings = self._settings  # a config reload applies to the round in progress
            now = time.monotonic()
            if self._stop.is_set():
                raise RoundAbandoned("the daemon is stopping")
            if not settings.enabled:
                raise RoundAbandoned("[bench] was turned off")
            if now - started > settings.max_round_seconds:
                raise RoundAbandoned(
                    f"the round took over max_round_seconds ({settings.max_round_seconds:g} s), waiting for quiet moments "
                    f"and spacing its slices at max_share {settings.max_share:g}"
                )
            quiet = now - self._admission.last_admitted >= settings.idle_ms / 1000
            if quiet and self._admission.queued_texts == 0 and now >= self._next_slice:
                return
            self._stop.wait(0.005)

    def _rows(self, measured: list[Measured], settings: BenchConfig) -> list[dict[str, Any]]:
        import numpy as np

        round_id, at = uuid.uuid4().hex[:12], time.time()
        active = {}
        for item in measured:
            routing = self._switchboard.describe(item.loaded.model) or {}
            if item.loaded.version == routing.get("active"):
                active[item.loaded.model] = item
        rows = []
        for item in measured:
            reference = active.get(item.loaded.model)
            agreement = None
            if reference is not None and reference.vectors.shape == item.vectors.shape:
                a, b = reference.vectors.astype(np.float64), item.vectors.astype(np.float64)
                cosine = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
                agreement = round(float(cosine.mean()), 6)
            singles = sorted(item.singles_ms)
            rows.append({
                "at": at, "model": item.loaded.model, "version": item.loaded.version, "periodic": True, "round": round_id,
                "fingerprint": item.loaded.fingerprint, "backend": item.loaded.config.backend,
                "texts_per_s": round(item.texts_per_s, 1), "p50_ms": round(singles[len(singles) // 2], 3), "p99_ms": round(singles[-1], 3),
                "batch_size": settings.batch_size, "concurrency": 1, "texts": len(item.vectors),
                "active": reference is item, "agreement": agreement, "agreement_gate": settings.min_agreement,
            })
        chosen = history.recommend(rows, settings.min_agreement)
        for row in rows:
            row["recommended"] = chosen.get(row["model"]) == row["version"]
        return rows

    def _flag_regressions(self, rows: list[dict[str, Any]], past: list[dict[str, Any]], settings: BenchConfig) -> None:
        for row in rows:
            before = history.baseline(past, row)
            if before is not None and row["texts_per_s"] < before * (1 - settings.regression):
                drop = 1 - row["texts_per_s"] / before
                row["regression"] = round(drop, 3)
                log.warning("periodic benchmark: %s@%s at %.1f texts/s is %.0f%% below its recent median %.1f", row["model"], row["version"], row["texts_per_s"], drop * 100, before)
                self._audit.record("bench_regression", model=row["model"], version=row["version"], texts_per_s=row["texts_per_s"], baseline=round(before, 1), drop=round(drop, 3))
