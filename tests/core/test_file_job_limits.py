"""File jobs at their limits (issue 27, point 9): a line or a csv field over 16 MiB is
named by its place and skipped under --on-error skip; --resume refuses a changed version
before anything is encoded; --restart starts over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotswapd.files.readers import LINE_LIMIT, InputError, RowReader
from hotswapd.jobs.corpus_build import build
from hotswapd.jobs.file_job import encode_file
from hotswapd.jobs.job_record import JobError
from hotswapd.corpus.files import CorpusError, MATRIX, PROGRESS, ROWS
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM
from tests.core.test_file_jobs import read_output
from tests.inproc import fake_config

HUGE = "x" * (LINE_LIMIT + 1024)


def test_a_jsonl_line_over_the_limit_is_named_and_skippable(start: StartDaemon, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ({"id": "a", "text": "first"}, {"id": "b", "text": HUGE}, {"id": "c", "text": "third"})))
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        with pytest.raises(InputError, match=r"^line 2: longer than 16 MiB"):
            encode_file(client, "m@v1", RowReader(source, "jsonl"), tmp_path / "out.npy")
        done = encode_file(client, "m@v1", RowReader(source, "jsonl", on_error="skip"), tmp_path / "out.npy")
        expected = client.encode(["first", "third"], "m@v1").embeddings
    assert (done.rows, done.rejected) == (2, 1)
    ids, vectors, _ = read_output(tmp_path / "out.npy")
    assert ids == ["a", "c"]
    np.testing.assert_array_equal(vectors, expected)
    (reject,) = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert reject["row"] == 2 and "16 MiB" in reject["reason"]


@pytest.mark.parametrize("layout", ["one line", "a quoted field over two lines"])
def test_a_csv_field_over_the_limit_is_named_and_skippable(start: StartDaemon, tmp_path: Path, layout: str) -> None:
    half = "y" * (LINE_LIMIT // 2 + 1024)
    # Over two lines, the record's quoted field goes on after the limit: its next line must
    # not be read as a record of its own ("evil").
    field = HUGE if layout == "one line" else f'"{half}\n{half}\nevil,injected"'
    source = tmp_path / "docs.csv"
    source.write_text(f"id,text\na,first\nb,{field}\nc,third\n")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        with pytest.raises(InputError, match=r"^record 2: .*(line 3 is longer than 16 MiB|a field is longer than 16 MiB \(at line 4\))"):
            encode_file(client, "m@v1", RowReader(source, "csv"), tmp_path / "out.jsonl")
        done = encode_file(client, "m@v1", RowReader(source, "csv", on_error="skip"), tmp_path / "out.jsonl")
    assert (done.rows, done.rejected) == (2, 1)
    assert read_output(tmp_path / "out.jsonl")[0] == ["a", "c"]


def test_a_line_of_exactly_the_limit_is_a_row(tmp_path: Path) -> None:
    exact = "z" * (LINE_LIMIT - len('{"text": ""}'))
    source = tmp_path / "docs.jsonl"
    source.write_bytes(json.dumps({"text": exact}).encode() + b"\r\n" + b'{"text": "next"}\n')
    rows = list(RowReader(source, "jsonl"))
    assert [len(row.text) for row in rows] == [len(exact), 4]  # type: ignore[union-attr]
    csv_source = tmp_path / "docs.csv"
    csv_source.write_text("text\n" + "z" * LINE_LIMIT + "\r\nnext\r\n", newline="")
    assert [len(row.text) for row in RowReader(csv_source, "csv")] == [LINE_LIMIT, 4]  # type: ignore[union-attr]


def test_a_csv_that_cannot_be_parsed_names_the_record_and_line(tmp_path: Path) -> None:
    source = tmp_path / "docs.csv"
    source.write_text('id,text\na,fine\nb,"unterminated\n')
    with pytest.raises(InputError, match=r"record 2 \(line \d\)"):
        list(RowReader(source, "csv", on_error="skip"))


def test_resume_refuses_a_changed_version_before_encoding_and_restart_starts_over(start: StartDaemon, tmp_path: Path) -> None:
    source = tmp_path / "docs.txt"
    source.write_text("".join(f"text {i}\n" for i in range(50)))
    output = tmp_path / "out.npy"
    work = output.with_name(output.name + ".partial")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        facts = {"path": str(source.resolve()), "size": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns, "format": "txt"}
        settings = {"normalize": None, "output": "npy", "text_field": "text", "id_field": None, "on_error": "fail"}
        work.mkdir()
        # An interrupted job of the same input and options, by m@v1 as it was before its files changed.
        record = {"model": "m", "version": "v1", "fingerprint": "0123456789abcdef", "weights": None, "dim": DIM, "rows": 10, "rejected": 0,
                  "rejects_bytes": 0, "input": facts, "settings": settings, "sink": {"lines_bytes": 0}}
        (work / "job.json").write_text(json.dumps(record))
        client.preload("m@v1")
        before = fakebackend.CONTROLS["v1"].encodes
        with pytest.raises(JobError, match=r"m@v1 changed since the job stopped .* --restart") as refused:
            encode_file(client, None, RowReader(source, "txt"), output, resume=True)
        assert "start the job again" not in str(refused.value)
        assert fakebackend.CONTROLS["v1"].encodes == before  # refused before any row was encoded
        with pytest.raises(JobError, match="--restart"):  # a plain run names the way too
            encode_file(client, None, RowReader(source, "txt"), output)
        done = encode_file(client, None, RowReader(source, "txt"), output, restart=True)
        assert done.rows == 50 and done.resumed_from == 0 and not work.exists()
        with pytest.raises(JobError, match="give one"):
            encode_file(client, None, RowReader(source, "txt"), output, resume=True, restart=True)
        # A work directory holding someone else's file is not emptied by --restart.
        work.mkdir()
        (work / "notes.txt").write_text("mine")
        with pytest.raises(JobError, match="no job wrote"):
            encode_file(client, None, RowReader(source, "txt"), output, restart=True)
        assert (work / "notes.txt").read_text() == "mine"


def test_index_build_restart_discards_an_interrupted_build_only(start: StartDaemon, tmp_path: Path) -> None:
    source = tmp_path / "docs.txt"
    source.write_text("".join(f"text {i}\n" for i in range(30)))
    output = tmp_path / "corpus"
    output.mkdir()
    for name in (PROGRESS, MATRIX, ROWS):
        (output / name).write_bytes(b"left by a killed build")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        facts = {"path": str(source)}
        with pytest.raises(CorpusError, match="--restart"):
            build(client, "m@v1", RowReader(source, "txt"), output, input_facts=facts)
        done = build(client, "m@v1", RowReader(source, "txt"), output, input_facts=facts, restart=True)
        assert done.rows == 30
        with pytest.raises(CorpusError, match="finished corpus"):
            build(client, "m@v1", RowReader(source, "txt"), output, input_facts=facts, restart=True)
    # A directory that is not only a build's loses nothing to --restart.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in (MATRIX, ROWS, "notes.txt"):
        (mixed / name).write_bytes(b"mine")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        with pytest.raises(CorpusError, match="no build wrote"):
            build(client, "m@v1", RowReader(source, "txt"), mixed, input_facts={"path": str(source)}, restart=True)
    assert sorted(item.name for item in mixed.iterdir()) == sorted([MATRIX, ROWS, "notes.txt"])
