"""A version and its corpus as one unit: the corpus is opened when the version loads,
checked to be that version's, counted in its memory, and closed with it.

A corpus that cannot be used does not fail the version's load (its texts can still be
encoded): the version carries the reason, a search on it answers it as a typed error, and
a switch to it is refused with it (hotswapd.daemon.switching), like the embedding-space guard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hotswapd.corpus.layout import CorpusError
from hotswapd.corpus.store import Corpus, open_corpus
from hotswapd.errors import HotswapError, IncompatibleVersions

if TYPE_CHECKING:
    from hotswapd.daemon.loaded import LoadedVersion

log = logging.getLogger(__name__)
EventSink = Callable[..., None]


def attach(loaded: LoadedVersion, on_event: EventSink) -> None:
    """Open ``loaded``'s corpus (``embeddings_path``) onto it, or record why not."""
    spec = loaded.config
    if not spec.embeddings_path:
        return
    name = f"{loaded.model}@{loaded.version}"
    try:
        corpus = open_corpus(spec.resolve(spec.embeddings_path))
    except (CorpusError, HotswapError, OSError) as exc:
        _refuse(loaded, on_event, getattr(exc, "message", None) or f"{spec.embeddings_path}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 -- hostile files: numpy may refuse them its own ways; the version still loads
        _refuse(loaded, on_event, f"{spec.embeddings_path}: {type(exc).__name__}: {exc}")
        return
    try:
        foreign = belongs(corpus, loaded)
    except CorpusError as exc:
        corpus.close()
        _refuse(loaded, on_event, str(exc))
        return
    if foreign:
        on_event("corpus_foreign_accepted", model=loaded.model, version=loaded.version, corpus=str(corpus.where), reason=foreign)
        log.warning("%s serves a foreign corpus (accept_foreign_corpus): %s", name, foreign)
    loaded.corpus = corpus
    loaded.memory_bytes += corpus.memory_bytes
    log.info("%s: corpus %s, %d rows x %d (%.0f MiB mapped)", name, corpus.where, corpus.rows, corpus.dim, corpus.memory_bytes / 2**20)


def belongs(corpus: Corpus, loaded: LoadedVersion) -> str | None:
    """None when ``corpus`` was made by ``loaded`` (or by its weights under another backend,
    precision or device); the reason when it was not but ``accept_foreign_corpus`` allows it.
    Raises :class:`CorpusError` otherwise: its vectors are not comparable with the queries'."""
    dimension = getattr(loaded.embedder, "dimension", None)
    if dimension is not None and corpus.dim != dimension:
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


def _refuse(loaded: LoadedVersion, on_event: EventSink, reason: str) -> None:
    loaded.corpus_problem = reason
    on_event("corpus_refused", model=loaded.model, version=loaded.version, reason=reason)
    log.warning("%s@%s: its corpus is not served: %s", loaded.model, loaded.version, reason)


def describe(loaded: LoadedVersion) -> dict[str, Any] | None:
    """For ``hs models``: the loaded corpus, or why there is none."""
    if loaded.corpus is not None:
        return loaded.corpus.describe()
    if loaded.corpus_problem:
        return {"problem": loaded.corpus_problem}
    return None


def switch_guard(current: LoadedVersion, target: LoadedVersion) -> bool:
    """Whether a switch from ``current`` to ``target`` moves a corpus with the model.

    Raises :class:`IncompatibleVersions` (a switch refused unless forced) when ``current``
    has a corpus and ``target`` has none it can use: searches would fail after the switch.
    True when both have their own: the index travels with the version, so the two need not
    share an embedding space (that is what a re-embedding migration is).
    """
    if not (current.config.embeddings_path or current.corpus is not None):
        return False
    if target.corpus is None:
        why = target.corpus_problem or "it has no embeddings_path"
        raise IncompatibleVersions(
            f"{target.model}@{target.version} has no corpus to search ({why}), and {current.version} has one: "
            f"searches would fail after the switch. Build it (hs index build {target.model}@{target.version} ...) "
            "and set its embeddings_path, or switch with --force"
        )
    return current.corpus is not None
