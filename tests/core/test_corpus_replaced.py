"""A corpus replaced on disk under a running daemon (issue 27, point 4): renamed into place,
it is served from the next search, reload or check, and the old maps close; overwritten in
place, it is refused loudly instead of mixing two corpora's rows and vectors."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd.corpus.files import FORMAT, MATRIX, OFFSETS, ROWS, Manifest, row_line, write_manifest
from hotswapd.corpus.store import open_corpus
from hotswapd.errors import CorpusUnavailable
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM, build_corpus, sentences, write_jsonl
from tests.inproc import InprocDaemon, fake_config

QUERY = "bank rates market growth"


def _serving(start: StartDaemon, tmp_path: Path):  # type: ignore[no-untyped-def]
    return start(fake_config(tmp_path, {"v1": {"dim": DIM, "embeddings_path": str(tmp_path / "served")}}))


def _two_corpora(daemon: InprocDaemon, tmp_path: Path, rows_a: int = 40, rows_b: int = 40) -> None:
    """corpus A at ``served`` (the version's embeddings_path), B beside it at ``next``."""
    with daemon.client() as client:
        build_corpus(client, "m@v1", write_jsonl(tmp_path / "a.jsonl", [f"alpha {t}" for t in sentences(rows_a, seed=1)]), tmp_path / "served")
        build_corpus(client, "m@v1", write_jsonl(tmp_path / "b.jsonl", [f"beta {t}" for t in sentences(rows_b, seed=2)]), tmp_path / "next")
        client.evict("m")  # loaded again with corpus A now there


def _texts(answer: dict[str, object]) -> set[str]:
    return {hit["text"].split()[0] for hit in answer["results"][0]}  # type: ignore[index]


def _mapped(fragment: str) -> bool:
    """Whether this process still maps or holds open a file whose path contains ``fragment``."""
    maps = Path("/proc/self/maps").read_text()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return fragment in maps or any(fragment in target for target in held)


def test_a_corpus_renamed_into_place_is_searched_at_once(start: StartDaemon, tmp_path: Path) -> None:
    with _serving(start, tmp_path) as daemon:
        _two_corpora(daemon, tmp_path, rows_a=40, rows_b=25)
        with daemon.client() as client:
            before = client.search(QUERY, "m", k=5)
            assert _texts(before) == {"alpha"} and before["rows"] == 40
            (tmp_path / "served").rename(tmp_path / "old-a")
            (tmp_path / "next").rename(tmp_path / "served")
            after = client.search(QUERY, "m", k=5)  # no reload, no evict
            assert _texts(after) == {"beta"} and after["rows"] == 25
            for hit in after["results"][0]:  # rows, ids and scores of one corpus, never mixed
                assert hit["id"] == f"d{hit['row']}"
            # The old corpus's maps and descriptor are gone (its disk space with them, had it been deleted).
            assert not _mapped(str(tmp_path / "old-a"))
            facts = next(item for item in client.models()[0]["version_detail"] if item["version"] == "v1")["corpus"]
            assert facts["rows"] == 25 and facts["path"] == str(tmp_path / "served")
            assert any(entry["event"] == "corpus_reopened" for entry in client.history("m", all_events=True))


def test_a_reload_reports_and_applies_a_replaced_corpus(start: StartDaemon, tmp_path: Path) -> None:
    with _serving(start, tmp_path) as daemon:
        _two_corpora(daemon, tmp_path)
        with daemon.client() as client:
            assert _texts(client.search(QUERY, "m", k=3)) == {"alpha"}
            shutil.move(tmp_path / "served", tmp_path / "old-a")
            shutil.move(tmp_path / "next", tmp_path / "served")
            result = client.reload_config()
            assert result["refreshed"] == ["m@v1: corpus reopened"], result
            assert client.status()["corpora"]["m@v1"]["rows"] == 40
            assert _texts(client.search(QUERY, "m", k=3)) == {"beta"}


def test_the_periodic_check_sees_a_replacement_without_a_search(start: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hotswapd.daemon.main

    monkeypatch.setattr(hotswapd.daemon.main, "FILES_CHECK_SECONDS", 0.5)  # 5 s in the daemon; the ticker reads it each tick
    with _serving(start, tmp_path) as daemon:
        _two_corpora(daemon, tmp_path, rows_a=40, rows_b=25)
        with daemon.client() as client:
            client.search(QUERY, "m")
            (tmp_path / "served").rename(tmp_path / "old-a")
            (tmp_path / "next").rename(tmp_path / "served")
            deadline = time.monotonic() + 15
            while client.status()["corpora"]["m@v1"]["rows"] != 25:
                assert time.monotonic() < deadline, "the replaced corpus was never noticed"
                time.sleep(0.2)
            assert not _mapped(str(tmp_path / "old-a"))


def test_a_matrix_overwritten_in_place_is_refused_loudly(start: StartDaemon, tmp_path: Path) -> None:
    with _serving(start, tmp_path) as daemon:
        _two_corpora(daemon, tmp_path)  # same row count: a same-size embeddings.npy
        with daemon.client() as client:
            assert _texts(client.search(QUERY, "m")) == {"alpha"}
            served = tmp_path / "served" / MATRIX
            inode = served.stat().st_ino
            time.sleep(0.05)  # past the file system's clock tick, so the copy has another mtime
            shutil.copyfile(tmp_path / "next" / MATRIX, served)  # cp over it: the same file, other bytes
            assert served.stat().st_ino == inode
            with pytest.raises(CorpusUnavailable, match="overwritten in place"):
                client.search(QUERY, "m")
            assert "overwritten in place" in client.status()["corpora"]["m@v1"]["problem"]
            overwritten = [entry for entry in client.history("m", all_events=True) if entry["event"] == "corpus_overwritten"]
            assert len(overwritten) == 1 and overwritten[0]["path"] == str(served)
            with pytest.raises(CorpusUnavailable):  # still refused, and said once
                client.search(QUERY, "m")
            assert len([e for e in client.history("m", all_events=True) if e["event"] == "corpus_overwritten"]) == 1
            # The way out: a whole corpus renamed into place.
            (tmp_path / "served").rename(tmp_path / "broken")
            (tmp_path / "next").rename(tmp_path / "served")
            assert _texts(client.search(QUERY, "m")) == {"beta"}


def test_rows_overwritten_in_place_are_refused(start: StartDaemon, tmp_path: Path) -> None:
    with _serving(start, tmp_path) as daemon:
        _two_corpora(daemon, tmp_path)
        with daemon.client() as client:
            client.search(QUERY, "m")
            time.sleep(0.05)
            with open(tmp_path / "served" / ROWS, "r+b") as handle:  # edited in place (a text editor saving over it)
                handle.write(b"{")
            with pytest.raises(CorpusUnavailable, match="overwritten in place"):
                client.search(QUERY, "m")


def _corpus_dir(where: Path, rows: int, dim: int = 4) -> Path:
    """A finished corpus written directly (no daemon): ids r0, r1, ..."""
    where.mkdir()
    matrix = np.random.default_rng(0).standard_normal((rows, dim)).astype("<f4")
    np.save(where / MATRIX, matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
    lines = [row_line(f"r{i}", f"text {i}") for i in range(rows)]
    (where / ROWS).write_bytes(b"".join(lines))
    np.save(where / OFFSETS, np.cumsum([0, *map(len, lines)]).astype("<i8"))
    write_manifest(where, Manifest(format=FORMAT, model="m", version="v1", fingerprint="f", rows=rows, dim=dim, texts=True))
    return where


def test_a_corpus_swapped_out_stays_open_for_the_search_holding_it(tmp_path: Path) -> None:
    corpus = open_corpus(_corpus_dir(tmp_path / "c", rows=30))
    query = np.ones(corpus.dim, dtype=np.float32) / np.sqrt(corpus.dim)
    assert corpus.acquire()
    corpus.close()  # swapped out while a search holds it
    hits = corpus.search(query, 3)
    assert len(hits) == 3 and all(hit.id == f"r{hit.row}" for hit in hits)  # its rows' ids, not bare row numbers
    corpus.release()  # the last holder: now it closes
    assert not corpus.acquire()
    assert corpus.rows == 0


def test_a_corpus_built_where_the_version_looks_is_served_once_finished(start: StartDaemon, tmp_path: Path) -> None:
    """A build appends to its files for as long as it runs; the version's checks must not
    take that for a served corpus overwritten in place (a false alarm, and a corpus refused
    for good once built). Found by the hostile review."""
    import threading

    from hotswapd.errors import CorpusUnavailable as Unavailable
    from tests import fakebackend

    with _serving(start, tmp_path) as daemon, daemon.client() as client:
        with pytest.raises(Unavailable):
            client.search(QUERY, "m")  # nothing built yet
        fakebackend.CONTROLS["v1"].delay = 0.01  # a build long enough to be looked at while it writes
        source = write_jsonl(tmp_path / "a.jsonl", [f"alpha {t}" for t in sentences(3000, seed=1)])
        def run_build() -> None:
            with daemon.client() as builder:
                build_corpus(builder, "m@v1", source, tmp_path / "served")

        building = threading.Thread(target=run_build)
        building.start()
        while building.is_alive():
            daemon.daemon.registry.refresh_attachments()  # what the ticker does every 5 s
            try:
                client.search(QUERY, "m")
            except Unavailable as exc:
                assert "overwritten" not in exc.message, exc.message
            time.sleep(0.02)
        building.join()
        fakebackend.CONTROLS["v1"].delay = 0.0
        answer = client.search(QUERY, "m")
        assert answer["rows"] == 3000 and _texts(answer) == {"alpha"}
        events = [entry["event"] for entry in client.history("m", all_events=True)]
        assert "corpus_overwritten" not in events


def test_a_refusal_ends_only_with_a_corpus_renamed_into_place(tmp_path: Path) -> None:
    """A file merely added (an ANN index built since) or changed again is no replacement;
    a directory or file renamed into place is. Found by the hostile review."""
    from hotswapd.corpus.ann import ANN
    from hotswapd.corpus.file_stamps import corpus_stamp, replaced

    served = _corpus_dir(tmp_path / "served", rows=4)
    opened = corpus_stamp(served)
    time.sleep(0.05)
    with open(served / MATRIX, "r+b") as handle:
        handle.write(b"\x93NUMPY")  # the same bytes: only the time moves
    (served / ANN).write_bytes(b"index")
    assert not replaced(opened, corpus_stamp(served))
    fresh = _corpus_dir(tmp_path / "fresh", rows=4)
    served.rename(tmp_path / "old")
    fresh.rename(served)
    assert replaced(opened, corpus_stamp(served))


def test_a_bridged_corpus_overwritten_in_place_stays_refused(start: StartDaemon, tmp_path: Path) -> None:
    """Searched through a bridge, the corpus it maps into is watched as the version's own:
    overwritten in place, it is refused, and stays refused. Found by the hostile review."""
    from hotswapd.jobs.bridge_fit import fit_bridge
    from tests.core.test_corpus import with_corpora

    texts = sentences(200, seed=14)
    with with_corpora(start, tmp_path, texts, ("v1",), v2={"bridge_path": str(tmp_path / "bridge")}) as daemon, daemon.client() as client:
        fit_bridge(client, "m@v2", "v1", sentences(400, seed=15), tmp_path / "bridge")
        build_corpus(client, "m@v1", write_jsonl(tmp_path / "other.jsonl", sentences(200, seed=99)), tmp_path / "other")
        client.evict("m")
        assert client.search("court law police", "m@v2", k=3)["bridge"]["to"] == "m@v1"
        time.sleep(0.05)
        shutil.copyfile(tmp_path / "other" / MATRIX, tmp_path / "corpus-v1" / MATRIX)  # the same inode, other vectors
        for _ in range(3):
            with pytest.raises(CorpusUnavailable, match="overwritten in place"):
                client.search("court law police", "m@v2", k=3)
        assert not [e for e in client.history("m", all_events=True) if e["event"] == "corpus_reopened" and e.get("version") == "v2"]
