"""`hs index build` as a user runs it: from every input format, killed midway and resumed,
and refusing bad rows with their number (issue 15)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hotswapd.jobs.corpus_build import build
from hotswapd.corpus.files import MANIFEST, MATRIX, OFFSETS, PROGRESS, ROWS, read_manifest
from hotswapd.files.readers import InputError, RowReader
from tests import fakebackend
from tests.conftest import HS, daemon_env, run_hs
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM, sentences
from tests.inproc import fake_config


def corpus_files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in (MATRIX, ROWS, OFFSETS)}


@pytest.mark.slow  # kills a real `hs index build` process mid-build
def test_a_killed_build_resumed_equals_an_uninterrupted_one(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(10_240, seed=9)
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(texts) + "\n")
    no_cache = "[cache]\nmax_mb = 0\n"  # every row of the second build reaches the (slowed) model
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra=no_cache)) as daemon, daemon.client() as client:
        build(client, "m@v1", RowReader(source, "txt"), tmp_path / "whole", input_facts={"path": str(source)})
        fakebackend.CONTROLS["v1"].delay = 0.1  # 40 chunks: ~4 s, long enough to be killed midway
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        command = [str(HS), "index", "build", "m@v1", "--input", str(source), "--output", str(tmp_path / "killed")]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        progress = tmp_path / "killed" / PROGRESS
        deadline = time.monotonic() + 30
        while not (progress.exists() and json.loads(progress.read_text())["rows"] > 0) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.05)
        time.sleep(0.35)  # past the checkpoint: rows written after it must be cut on resume
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)  # reaps it and closes its pipe
        done_before = json.loads(progress.read_text())["rows"]
        assert 0 < done_before < len(texts) and not (tmp_path / "killed" / MANIFEST).exists()
        refused = run_hs("index", "build", "m@v1", "--input", str(source), "--output", str(tmp_path / "killed"), endpoint=daemon.endpoint)
        assert refused.returncode != 0 and b"--resume" in refused.stderr
        fakebackend.CONTROLS["v1"].delay = 0.0
        resumed = run_hs("index", "build", "m@v1", "--input", str(source), "--output", str(tmp_path / "killed"), "--resume", endpoint=daemon.endpoint)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed after {done_before:,}".encode() in resumed.stderr
    assert corpus_files(tmp_path / "killed") == corpus_files(tmp_path / "whole")
    whole, killed = read_manifest(tmp_path / "whole"), read_manifest(tmp_path / "killed")
    assert (killed.rows, killed.fingerprint, killed.weights) == (whole.rows, whole.fingerprint, whole.weights) == (len(texts), whole.fingerprint, whole.weights)
    assert not (tmp_path / "killed" / PROGRESS).exists()


def test_every_input_format_gives_the_same_rows(tmp_path: Path) -> None:
    records = [{"doc": f"d{i}", "body": text} for i, text in enumerate(sentences(50, seed=10))]
    records[3]["body"] = 'quoted, "comma" text\nwith a newline'
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with open(tmp_path / "a.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["doc", "body"])
        writer.writeheader()
        writer.writerows(records)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet", row_group_size=7)
    expected = [(r["doc"], r["body"]) for r in records]
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        reader = RowReader(tmp_path / name, name.split(".")[1], text_field="body", id_field="doc")  # type: ignore[arg-type]
        assert [(row.id, row.text) for row in reader] == expected, name
        assert reader.size() is not None
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    assert [(row.id, row.text) for row in RowReader(tmp_path / "a.txt", "txt")] == [(1, "one"), (2, "two")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"doc": "a", "body": "fine"}\n{"doc": "b"}\n', "line 2 (id 'b'): no 'body' field"),
        ('{"doc": "a", "body": "fine"}\n{"doc": "b", "body": "  "}\n', "line 2 (id 'b'): the text is empty"),
        ('{"doc": "a", "body": 7}\n', "line 1 (id 'a'): the text is a int"),
        ('{"doc": [1], "body": "x"}\n', "line 1: the id [1] is a list"),
        ("[1, 2]\n", "line 1: a JSON list, not an object"),
        ("{not json\n", "line 1: not JSON"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        list(RowReader(tmp_path / "bad.jsonl", "jsonl", text_field="body", id_field="doc"))


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_hs_search_and_build_speak_to_users(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(40, seed=11)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": ""}\n')
    options = {"v1": {"dim": DIM, "embeddings_path": str(tmp_path / "c1")}}
    with start(fake_config(tmp_path, options)) as daemon, daemon.client() as client:
        built = run_hs("index", "build", "m@v1", "--input", str(tmp_path / "docs.jsonl"), "-o", str(tmp_path / "c1"), endpoint=daemon.endpoint)
        assert built.returncode == 0 and b"40 rows" in built.stderr and b"with m@v1" in built.stderr
        bad = run_hs("index", "build", "m@v1", "--input", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "c2"), endpoint=daemon.endpoint)
        assert bad.returncode == 1 and bad.stderr.decode().strip() == "hs: error: line 2 (id 'b'): the text is empty"
        client.evict("m")
        found = run_hs("search", texts[5], "-m", "m", "-k", "3", "--json", endpoint=daemon.endpoint)
        answer = json.loads(found.stdout)
        assert answer["results"][0][0]["id"] == "n5" and answer["version"] == "v1"
        table = run_hs("search", texts[5], "-m", "m", "-k", "3", endpoint=daemon.endpoint)
        assert table.returncode == 0 and b"n5" in table.stdout and texts[5].encode() in table.stdout
        none = run_hs("search", "x", "-m", "m", "-k", "0", endpoint=daemon.endpoint)
        assert none.returncode == 2
    assert os.listdir(tmp_path / "c2") == [] or not (tmp_path / "c2" / MANIFEST).exists()


def test_a_second_build_of_the_same_corpus_is_refused_while_the_first_runs(start: StartDaemon, tmp_path: Path) -> None:
    """Before: two `hs index build` to one output both exited 0; the directory held the
    second build's rows while the first claimed its own. A build takes its output's lock,
    as file jobs do."""
    import threading

    from hotswapd.corpus.files import CorpusError
    from tests.core.test_corpus import build_corpus, write_jsonl
    from tests.core.test_leases import hold

    source = write_jsonl(tmp_path / "docs.jsonl", sentences(400, seed=21))
    output = tmp_path / "corpus"
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client, daemon.client() as other:
        client.encode(["warm"], "m@v1")
        gate = hold("v1")  # the first build's first batch waits here, holding the lock
        failures: list[BaseException] = []

        def first() -> None:
            try:
                build_corpus(client, "m@v1", source, output)
            except BaseException as exc:  # noqa: BLE001 -- reported below
                failures.append(exc)

        worker = threading.Thread(target=first)
        worker.start()
        assert fakebackend.CONTROLS["v1"].entered.wait(10)
        try:
            with pytest.raises(CorpusError, match="another job .* is writing"):
                build_corpus(other, "m@v1", write_jsonl(tmp_path / "few.jsonl", sentences(150, seed=22)), output)
        finally:
            gate.set()
        worker.join(60)
        assert not failures, failures
    assert read_manifest(output).rows == 400 and not (tmp_path / ".corpus.lock").exists()
