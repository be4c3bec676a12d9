"""A version and its corpus as one unit: the corpus is opened when the version loads,
checked to be that version's, counted in its memory, and closed with it.

A corpus that cannot be used does not fail the version's load (its texts can still be
encoded): the version carries the reason, a search on it answers it as a typed error, and
a switch to it is refused with it (hotswapd.core.switching), like the embedding-space guard.

The files are watched: every search, every reload and every few seconds compare what is
on disk (device, inode, size, modification time of each file) with what was opened.

- Replaced (another directory renamed into place, a corpus built where there was none, an
  ANN index added): opened again and checked as at the load, then swapped in; searches
  already holding the old one finish on it, and it closes after the last of them.
- Overwritten in place (the same file, another size or time: `cp` over `embeddings.npy`):
  taken out of service at once, loudly (``corpus_overwritten``): its map now mixes two
  corpora. It comes back when a corpus is renamed into place, or the version is reloaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.corpus.bridge import MAP, BridgedCorpus, read_bridge
from hotswapd.corpus.bridge import MANIFEST as BRIDGE_MANIFEST
from hotswapd.corpus.file_stamps import Stamp, changed_in_place, corpus_stamp, replaced, stamps
from hotswapd.corpus.files import MATRIX, CorpusError
from hotswapd.corpus.store import Corpus, open_corpus
from hotswapd.errors import HotswapError, IncompatibleVersions

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig
    from hotswapd.core.snapshot import Snapshot
    from hotswapd.pipeline.loaded import LoadedVersion

log = logging.getLogger(__name__)
EventSink = Callable[..., None]
KEY = "corpus"  # its name among a loaded version's attachments, and in `hs models`


@dataclass
class AttachedCorpus:
    """A loaded version's corpus, or why it has none; closed with the version."""

    corpus: Corpus | BridgedCorpus | None = None
    problem: str | None = None
    stamp: Stamp = ()
    overwritten: bool = False  # refused for a file changed in place; said once
    # The corpus a bridge mapped into when it was refused: still watched, so that only a
    # corpus renamed into place there ends the refusal.
    refused_bridged: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def close(self) -> None:
        if self.corpus is not None:
            self.corpus.close()


def _held(loaded: LoadedVersion) -> AttachedCorpus:
    held = loaded.attachments.get(KEY)
    if held is None:
        held = loaded.attachments[KEY] = AttachedCorpus()
    return held  # type: ignore[no-any-return]


def corpus_of(loaded: LoadedVersion) -> tuple[Corpus | BridgedCorpus | None, str | None]:
    """The corpus a version searches, and why it has none (None, None: it names none)."""
    held = loaded.attachments.get(KEY)
    return (held.corpus, held.problem) if held is not None else (None, None)


def take(loaded: LoadedVersion, on_event: EventSink) -> tuple[Corpus | BridgedCorpus | None, str | None]:
    """For one search: the corpus as its files are now (re-opened first if they were
    replaced), held open until :meth:`release`; or why there is none."""
    refresh(loaded, on_event)
    held = loaded.attachments.get(KEY)
    if held is None:
        return None, None
    with held.lock:
        corpus, problem = held.corpus, held.problem
        if corpus is not None and not corpus.acquire():  # closed between the two lines above: never, under the lock
            return None, problem or "its corpus was closed"
    return corpus, problem


class CorpusHook:
    """The corpus as a version hook (hotswapd.core.seams): counted in the memory budget
    before the load, opened with the version, checked at a switch, shown in `hs models`."""

    name = KEY

    def expected_bytes(self, spec: VersionConfig) -> int:
        return expected_bytes(spec)

    def on_load(self, loaded: LoadedVersion, on_event: EventSink) -> None:
        attach(loaded, on_event)

    def switch_check(self, current: LoadedVersion, target: LoadedVersion) -> bool:
        return switch_guard(current, target)

    def describe(self, loaded: LoadedVersion) -> dict[str, Any] | None:
        return describe(loaded)

    def refresh(self, loaded: LoadedVersion, on_event: EventSink) -> str | None:
        return refresh(loaded, on_event)


def attach(loaded: LoadedVersion, on_event: EventSink) -> None:
    """Open ``loaded``'s corpus (``embeddings_path``) onto it, or record why not; without a
    usable one, another version's corpus through its bridge (``bridge_path``), if any."""
    held = _held(loaded)
    with held.lock:
        _open_into(held, loaded, on_event)
        if held.corpus is not None:
            loaded.memory_bytes += held.corpus.memory_bytes


def _open_into(held: AttachedCorpus, loaded: LoadedVersion, on_event: EventSink) -> None:
    held.corpus = None
    before = stamp_of(loaded, None)  # before opening: a file replaced meanwhile is seen at the next check
    try:
        if loaded.config.embeddings_path:
            _attach_own(held, loaded, on_event)
        if held.corpus is None and loaded.config.bridge_path:
            _attach_bridge(held, loaded, on_event)
    except Exception as exc:
        log.exception("%s@%s: opening its corpus failed", loaded.model, loaded.version)
        if held.corpus is not None:
            held.corpus.close()
            held.corpus = None
        _refuse(held, loaded, on_event, f"{type(exc).__name__}: {exc}")
    bridged = held.corpus.where if isinstance(held.corpus, BridgedCorpus) else None
    held.stamp = before + corpus_stamp(bridged) if bridged is not None else before


def refresh(loaded: LoadedVersion, on_event: EventSink) -> str | None:
    """Compare the corpus's files with what was opened; re-open what was replaced, refuse
    what was overwritten in place. Returns what it did ("reopened", "refused"), or None."""
    held = loaded.attachments.get(KEY)
    if held is None or not (loaded.config.embeddings_path or loaded.config.bridge_path):
        return None
    with held.lock:
        bridged = held.corpus.where if isinstance(held.corpus, BridgedCorpus) else held.refused_bridged
        now = stamp_of(loaded, bridged)
        if now == held.stamp:
            return None
        name = f"{loaded.model}@{loaded.version}"
        if held.overwritten and not replaced(held.stamp, now):
            return None  # refused, and said; only a corpus renamed into place (or a reload of the version) ends it
        in_place = changed_in_place(held.stamp, now, held.corpus.where if held.corpus is not None else None)
        if in_place is not None:
            held.overwritten = True
            reason = (f"{in_place} was overwritten in place while the daemon served it: its map now mixes two corpora. "
                      "Write the new corpus to another directory and rename it into place (or hs evict the version)")
            old, held.corpus = held.corpus, None
            held.refused_bridged = old.where if isinstance(old, BridgedCorpus) else None
            if old is not None:
                loaded.memory_bytes -= old.memory_bytes
                old.close()  # after the searches holding it
            held.problem = reason
            on_event("corpus_overwritten", model=loaded.model, version=loaded.version, path=in_place)
            log.error("%s: its corpus is refused: %s", name, reason)
            return "refused"
        fresh = AttachedCorpus()
        _open_into(fresh, loaded, on_event)
        old = held.corpus
        held.corpus, held.problem, held.stamp, held.overwritten, held.refused_bridged = fresh.corpus, fresh.problem, fresh.stamp, False, None
        loaded.memory_bytes += (fresh.corpus.memory_bytes if fresh.corpus is not None else 0) - (old.memory_bytes if old is not None else 0)
        if old is not None:
            old.close()  # after the searches holding it
        where = str(fresh.corpus.where) if fresh.corpus is not None else None
        on_event("corpus_reopened", model=loaded.model, version=loaded.version, corpus=where, problem=fresh.problem)
        log.warning("%s: its corpus changed on disk; %s", name, f"now serving {where}" if where else f"none is served: {fresh.problem}")
        return "reopened"


def stamp_of(loaded: LoadedVersion, bridged: Path | None) -> Stamp:
    """What the files a version's corpus comes from are now: its own directory's, its
    bridge's, and those of the corpus the bridge maps into (``bridged``)."""
    spec = loaded.config
    stamp: Stamp = ()
    own = spec.local_path(spec.embeddings_path) if spec.embeddings_path else None
    if own is not None:
        stamp += corpus_stamp(own)
    bridge = spec.local_path(spec.bridge_path) if spec.bridge_path else None
    if bridge is not None:
        stamp += stamps([bridge, bridge / BRIDGE_MANIFEST, bridge / MAP])
    if bridged is not None:
        stamp += corpus_stamp(bridged)
    return stamp


def expected_bytes(spec: VersionConfig) -> int:
    """What a version's corpus will map, for the memory budget before the load (0 when
    there is none or it cannot be found: the load then says why)."""
    if not spec.embeddings_path:
        return 0
    try:
        path = spec.resolve(spec.embeddings_path)
        return (path if path.is_file() else path / MATRIX).stat().st_size
    except Exception:  # noqa: BLE001 -- a symlink loop is a RuntimeError; the load says why later
        return 0


def _attach_own(held: AttachedCorpus, loaded: LoadedVersion, on_event: EventSink) -> None:
    spec = loaded.config
    assert spec.embeddings_path is not None
    name = f"{loaded.model}@{loaded.version}"
    try:
        corpus = open_corpus(spec.resolve(spec.embeddings_path))
    except (CorpusError, HotswapError, OSError) as exc:
        _refuse(held, loaded, on_event, getattr(exc, "message", None) or f"{spec.embeddings_path}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 -- hostile files: numpy may refuse them its own ways; the version still loads
        _refuse(held, loaded, on_event, f"{spec.embeddings_path}: {type(exc).__name__}: {exc}")
        return
    try:
        foreign = belongs(corpus, loaded)
    except CorpusError as exc:
        corpus.close()
        _refuse(held, loaded, on_event, str(exc))
        return
    if foreign:
        on_event("corpus_foreign_accepted", model=loaded.model, version=loaded.version, corpus=str(corpus.where), reason=foreign)
        log.warning("%s serves a foreign corpus (accept_foreign_corpus): %s", name, foreign)
    held.corpus = corpus
    log.info("%s: corpus %s, %d rows x %d (%.0f MiB mapped)", name, corpus.where, corpus.rows, corpus.dim, corpus.memory_bytes / 2**20)


def belongs(corpus: Corpus, loaded: LoadedVersion) -> str | None:
    """None when ``corpus`` was made by ``loaded`` (or by its weights under another backend,
    precision or device); the reason when it was not but ``accept_foreign_corpus`` allows it.
    Raises :class:`CorpusError` otherwise: its vectors are not comparable with the queries'."""
    dimension = loaded.embedder.dimension
    if corpus.dim != dimension:
        raise CorpusError(f"{corpus.where} holds {corpus.dim}-dim vectors; {loaded.model}@{loaded.version} makes {dimension}-dim ones")
    manifest = corpus.manifest
    if manifest is None or manifest.fingerprint == loaded.fingerprint or (manifest.weights and manifest.weights == loaded.weights):
        return None
    reason = (
        f"{corpus.where} was built by {manifest.model}@{manifest.version} (fingerprint {manifest.fingerprint}, weights {manifest.weights}); "
        f"{loaded.model}@{loaded.version} is fingerprint {loaded.fingerprint}, weights {loaded.weights}"
    )
    if loaded.config.accept_foreign_corpus:
        return reason
    raise CorpusError(f"{reason}: its vectors are not comparable. Rebuild it (hs index build {loaded.model}@{loaded.version}) or set accept_foreign_corpus = true")


def _attach_bridge(held: AttachedCorpus, loaded: LoadedVersion, on_event: EventSink) -> None:
    spec = loaded.config
    assert spec.bridge_path is not None
    name = f"{loaded.model}@{loaded.version}"
    own = held.problem
    try:
        where = spec.resolve(spec.bridge_path)
        manifest, matrix = read_bridge(where)
        if manifest.from_fingerprint != loaded.fingerprint:
            raise CorpusError(f"{where} was fitted for fingerprint {manifest.from_fingerprint}; {name} is {loaded.fingerprint} (fit it again: hs index bridge)")
        if manifest.recall_at_10 < spec.bridge_min_recall:
            raise CorpusError(f"{where} recovers recall@10 {manifest.recall_at_10:.3f} of {name}'s own search; bridge_min_recall is {spec.bridge_min_recall}")
        if loaded.embedder.dimension != manifest.from_dim:
            raise CorpusError(f"{where} maps {manifest.from_dim}-dim queries; {name} makes {loaded.embedder.dimension}-dim ones")
        corpus = open_corpus(Path(manifest.corpus))
    except Exception as exc:  # noqa: BLE001 -- CorpusError, a source error, or whatever a hostile file makes numpy raise
        _refuse(held, loaded, on_event, "; ".join(filter(None, [own, f"bridge: {getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}"])))
        return
    if corpus.manifest is None or corpus.manifest.fingerprint != manifest.to_fingerprint or corpus.dim != manifest.to_dim:
        corpus.close()
        _refuse(held, loaded, on_event, "; ".join(filter(None, [own, f"bridge: the corpus {corpus.where} is not the one {where} was fitted to (fit it again)"])))
        return
    held.corpus = BridgedCorpus(corpus, matrix, manifest, where)
    held.problem = None
    on_event("corpus_bridged", model=loaded.model, version=loaded.version, to=manifest.to_version, recall_at_10=manifest.recall_at_10, own=own)
    log.warning("%s searches %s@%s's corpus through a bridge (recall@10 %.3f) until its own is built%s", name, manifest.model, manifest.to_version,
                manifest.recall_at_10, f" ({own})" if own else "")


def _refuse(held: AttachedCorpus, loaded: LoadedVersion, on_event: EventSink, reason: str) -> None:
    held.problem = reason
    on_event("corpus_refused", model=loaded.model, version=loaded.version, reason=reason)
    log.warning("%s@%s: its corpus is not served: %s", loaded.model, loaded.version, reason)


def describe(loaded: LoadedVersion) -> dict[str, Any] | None:
    """For ``hs models``: the loaded corpus, or why there is none."""
    corpus, problem = corpus_of(loaded)
    if corpus is not None:
        return corpus.describe()
    if problem:
        return {"problem": problem}
    return None


def corpora_status(snap: Snapshot) -> dict[str, Any]:
    """For ``hs status``: each loaded version's corpus (rows, dim, memory, index) or why it was refused."""
    described = {f"{item.model}@{item.version}": describe(item) for item in snap.loaded.values()}
    return {spec: facts for spec, facts in described.items() if facts}


def switch_guard(current: LoadedVersion, target: LoadedVersion) -> bool:
    """Whether a switch from ``current`` to ``target`` moves a corpus with the model.

    Raises :class:`IncompatibleVersions` (a switch refused unless forced) when ``current``
    has a corpus and ``target`` has none it can use: searches would fail after the switch.
    True when both have their own: the index travels with the version, so the two need not
    share an embedding space (that is what a re-embedding migration is).
    """
    own, _ = corpus_of(current)
    theirs, problem = corpus_of(target)
    if not (current.config.embeddings_path or own is not None):
        return False
    if theirs is None:
        why = problem or "it has no embeddings_path"
        raise IncompatibleVersions(
            f"{target.model}@{target.version} has no corpus to search ({why}), and {current.version} has one: "
            f"searches would fail after the switch. Build it (hs index build {target.model}@{target.version} ...) "
            "and set its embeddings_path, or switch with --force"
        )
    return own is not None
