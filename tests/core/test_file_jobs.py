"""`hs encode --input FILE --output FILE` (issue 16, part 1): every output kind, pinned to one
version, resumable after a kill, bad rows named or skipped into a rejects file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hotswapd.files.readers import RowReader
from hotswapd.jobs.file_job import encode_file
from hotswapd.jobs.job_record import JobError
from tests import fakebackend
from tests.conftest import HS, daemon_env, run_hs
from tests.core.conftest import StartDaemon
from tests.core.test_corpus import DIM, sentences
from tests.daemons import REPO, RunningDaemon, short_socket_dir, wait_until_answering
from tests.inproc import fake_config

NO_CACHE = "[cache]\nmax_mb = 0\n"


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def docs(count: int, seed: int = 3) -> list[dict[str, object]]:
    return [{"doc": f"d{i}", "body": text} for i, text in enumerate(sentences(count, seed=seed))]


def read_output(path: Path) -> tuple[list[object], np.ndarray, dict[str, str]]:
    """ids, vectors and (parquet) metadata of a finished job's output, whatever its kind."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
        vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(len(table), -1)
        return table.column(table.schema.names[0]).to_pylist(), vectors, metadata
    if path.suffix == ".npy":
        ids = [json.loads(line)["id"] for line in path.with_suffix(".ids.jsonl").read_text().splitlines()]
        return ids, np.load(path), {}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["id"] for r in records], np.array([r["embedding"] for r in records], dtype=np.float32), {"hotswap.version": records[0]["version"]}


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
@pytest.mark.parametrize("kind", ["parquet", "npy", "jsonl"])
def test_every_output_kind_holds_the_daemons_vectors_with_their_ids(start: StartDaemon, tmp_path: Path, kind: str) -> None:
    records = docs(700)
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    output = tmp_path / f"out.{kind}"
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        done = run_hs("encode", "--input", str(source), "--field", "body", "--id-field", "doc", "--output", str(output), "-m", "m", endpoint=daemon.endpoint)
        assert done.returncode == 0, done.stderr
        expected = client.encode([str(r["body"]) for r in records], "m@v1").embeddings
        fingerprint = client.encode(["x"], "m@v1").fingerprint
    ids, vectors, metadata = read_output(output)
    assert ids == [r["doc"] for r in records]
    np.testing.assert_array_equal(vectors, expected)
    line = done.stderr.decode()
    assert line.startswith("encoded 700 rows into") and "rows/s" in line and "with m@v1" in line, line
    assert not output.with_name(output.name + ".partial").exists()
    if kind == "parquet":
        schema = pq.read_schema(output)
        assert schema.field("embedding").type == pa.list_(pa.float32(), DIM)  # fixed_size_list<float32>
        assert (metadata["hotswap.model"], metadata["hotswap.version"], metadata["hotswap.fingerprint"]) == ("m", "v1", fingerprint)
        assert json.loads(metadata["hotswap"])["rows"] == 700


def test_a_switch_during_the_job_changes_nothing(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": r["body"]} for r in docs(3000)])
    config = fake_config(tmp_path, {"v1": {"dim": DIM}, "v2": {"dim": DIM, "scale": -1.0}}, extra=NO_CACHE)
    with start(config) as daemon, daemon.client() as client:
        client.preload("m@v2")
        fakebackend.CONTROLS["v1"].delay = 0.02
        switched = threading.Event()

        def on_rows(rows: int) -> None:
            if rows >= 512 and not switched.is_set():
                client_b = daemon.client()
                client_b.switch("m", "v2")
                client_b.close()
                switched.set()

        done = encode_file(client, "m", RowReader(source, "jsonl"), tmp_path / "out.parquet", on_rows=on_rows)
        assert switched.is_set() and client.models()[0]["version"] == "v2"
        expected = client.encode([json.loads(line)["text"] for line in source.read_text().splitlines()], "m@v1").embeddings
    assert (done.model, done.version, done.rows) == ("m", "v1", 3000)
    _, vectors, metadata = read_output(tmp_path / "out.parquet")
    assert metadata["hotswap.version"] == "v1"
    np.testing.assert_array_equal(vectors, expected)


@pytest.mark.slow  # kills a real `hs` process mid-job (seconds of work to be killed in)
@pytest.mark.parametrize("kind", ["parquet", "npy"])
def test_a_killed_job_resumed_equals_an_uninterrupted_one(start: StartDaemon, tmp_path: Path, kind: str) -> None:
    records = [{"id": i * 7, "text": t} for i, t in enumerate(sentences(10_240, seed=9))]
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra=NO_CACHE)) as daemon, daemon.client() as client:
        encode_file(client, "m@v1", RowReader(source, "jsonl"), tmp_path / f"whole.{kind}")
        fakebackend.CONTROLS["v1"].delay = 0.1  # 40 chunks: ~4 s, long enough to be killed midway
        output = tmp_path / f"killed.{kind}"
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        process = subprocess.Popen([str(HS), "encode", "-i", str(source), "-o", str(output), "-m", "m"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        record = output.with_name(output.name + ".partial") / "job.json"
        deadline = time.monotonic() + 30
        while not (record.exists() and json.loads(record.read_text())["rows"] > 0) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.05)
        time.sleep(0.35 if kind == "npy" else 2.5)  # past a checkpoint: what was written after it must go
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        done_before = json.loads(record.read_text())["rows"]
        assert 0 < done_before < len(records) and not output.exists()
        refused = run_hs("encode", "-i", str(source), "-o", str(output), endpoint=daemon.endpoint)
        assert refused.returncode == 1 and b"--resume" in refused.stderr
        fakebackend.CONTROLS["v1"].delay = 0.0
        resumed = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=daemon.endpoint)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed after {done_before:,}".encode() in resumed.stderr
    whole, killed = read_output(tmp_path / f"whole.{kind}"), read_output(output)
    assert killed[0] == whole[0] == [r["id"] for r in records]
    np.testing.assert_array_equal(killed[1], whole[1])
    assert not record.parent.exists()


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_bad_rows_stop_the_job_or_go_to_the_rejects_file(start: StartDaemon, tmp_path: Path) -> None:
    records: list[dict[str, object]] = [{"id": f"r{i}", "text": t} for i, t in enumerate(sentences(600, seed=4))]
    records[2] = {"id": "empty", "text": "   "}
    records[300] = {"id": "number", "text": 7}
    records[599] = {"id": "last"}
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        failed = run_hs("encode", "-i", str(source), "-o", str(tmp_path / "out.parquet"), endpoint=daemon.endpoint)
        assert failed.returncode == 1
        assert failed.stderr.decode().strip() == "hs: error: line 3 (id 'empty'): the text is empty"
        assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.parquet.partial").exists()
        skipped = run_hs("encode", "-i", str(source), "-o", str(tmp_path / "out.parquet"), "--on-error", "skip", endpoint=daemon.endpoint)
        assert skipped.returncode == 0, skipped.stderr
        assert b"597 rows, 3 rejected" in skipped.stderr
        good = [r for r in records if isinstance(r.get("text"), str) and str(r["text"]).strip()]
        expected = client.encode([str(r["text"]) for r in good], "m@v1").embeddings
    ids, vectors, _ = read_output(tmp_path / "out.parquet")
    assert ids == [r["id"] for r in good]
    np.testing.assert_array_equal(vectors, expected)
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["id"]) for r in rejects] == [(3, "empty"), (301, "number"), (600, "last")]
    assert [r["reason"] for r in rejects] == ["the text is empty", "the text is a int, not a string", "no 'text' field"]


def test_a_text_the_daemon_refuses_is_named_or_rejected_and_the_rest_stay_in_order(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(900, seed=5)
    texts[700] = "long " * 200  # over max_text_bytes: the daemon refuses it, the reader cannot know
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(texts) + "\n")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra="[daemon]\nmax_text_bytes = 512\n")) as daemon, daemon.client() as client:
        with pytest.raises(JobError, match=r"^row 701: .*512"):
            encode_file(client, None, RowReader(source, "txt"), tmp_path / "out.npy")
        done = encode_file(client, None, RowReader(source, "txt", on_error="skip"), tmp_path / "out.npy")
        kept = [t for i, t in enumerate(texts) if i != 700]
        expected = client.encode(kept[:450], "m@v1").embeddings, client.encode(kept[450:], "m@v1").embeddings
    assert (done.rows, done.rejected) == (899, 1)
    ids, vectors, _ = read_output(tmp_path / "out.npy")
    assert ids == [n for n in range(1, 901) if n != 701]
    np.testing.assert_array_equal(vectors, np.vstack(expected))
    (reject,) = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert reject["row"] == 701 and "512" in reject["reason"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_resume_refuses_what_would_mix_two_jobs(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in sentences(300, seed=6)])
    output = tmp_path / "out.jsonl"
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}, "v2": {"dim": DIM}})) as daemon, daemon.client() as client:
        # Nothing to go on with (stopped before the first checkpoint, or never begun): it begins.
        nothing = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=daemon.endpoint)
        assert nothing.returncode == 0 and output.exists(), nothing.stderr
        work = output.with_name(output.name + ".partial")
        work.mkdir()
        encode_file(client, "m@v1", RowReader(source, "jsonl"), output)  # leaves no work directory behind
        finished = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=daemon.endpoint)
        assert finished.returncode == 1 and b"nothing to resume" in finished.stderr
        # An interrupted record, then the input changes under it:
        work.mkdir()
        record = {"model": "m", "version": "v1", "fingerprint": "f", "weights": None, "dim": DIM, "rows": 1, "rejected": 0,
                  "rejects_bytes": 0, "input": {}, "settings": {}, "sink": {}}
        (work / "job.json").write_text(json.dumps(record))
        changed = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=daemon.endpoint)
        assert changed.returncode == 1 and b"the input changed" in changed.stderr
        other = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", "-m", "m@v2", endpoint=daemon.endpoint)
        assert other.returncode == 1 and b"with m@v1, not m@v2" in other.stderr
        (work / "job.json").write_text('{"model": [[[[' * 5000)
        damaged = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=daemon.endpoint)
        assert damaged.returncode == 1 and b"unreadable" in damaged.stderr


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_mixed_id_types_and_unknown_output_kinds_are_refused(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "text": "one"}, {"id": "two", "text": "two"}])
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon:
        mixed = run_hs("encode", "-i", str(source), "-o", str(tmp_path / "out.parquet"), endpoint=daemon.endpoint)
        assert mixed.returncode == 1 and b"row 2: the id 'two' is a str, but earlier ids are int64s" in mixed.stderr
        unknown = run_hs("encode", "-i", str(source), "-o", str(tmp_path / "out.csv"), endpoint=daemon.endpoint)
        assert unknown.returncode == 1 and b"end it in .parquet, .npy or .jsonl" in unknown.stderr
        loose = run_hs("encode", "-o", str(tmp_path / "out.npy"), endpoint=daemon.endpoint)
        assert loose.returncode == 2 and b"--input" in loose.stderr


def test_input_to_stdout_keeps_the_formats_of_stdin(start: StartDaemon, tmp_path: Path) -> None:
    records = docs(300)
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        done = run_hs("encode", "-i", str(source), "--field", "body", "-f", "npy", endpoint=daemon.endpoint)
        assert done.returncode == 0, done.stderr
        expected = client.encode([str(r["body"]) for r in records], "m@v1").embeddings
    (tmp_path / "out.npy").write_bytes(done.stdout)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


# A real daemon process serving the fake backend (no torch): `kill -9` needs another process.
LAUNCH = "import sys; from hotswapd import backends; backends.BUILTIN['fake'] = 'tests.fakebackend'; from hotswapd.daemon.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow  # two real daemon processes, one killed
def test_a_daemon_that_dies_mid_job_is_a_clear_error_and_the_job_resumes_on_the_next(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in sentences(3000, seed=8)])
    config = tmp_path / "config.toml"
    config.write_text(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra=NO_CACHE))
    endpoint = "ipc://" + str(short_socket_dir() / "d.sock")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}

    def launch(slow: bool) -> subprocess.Popen[bytes]:  # slow: the job is still running when the daemon is killed
        process = subprocess.Popen([sys.executable, "-c", LAUNCH, "--socket", endpoint, "--config", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=REPO, env=daemon_env(**env, **({"HOTSWAP_FAKE_SLEEP": "0.3"} if slow else {})))
        wait_until_answering(RunningDaemon(process, endpoint, Path(), config, tmp_path / "daemon.log"), 30)
        return process

    output = tmp_path / "out.parquet"
    record = tmp_path / "out.parquet.partial" / "job.json"
    daemon = launch(slow=True)
    try:
        job = subprocess.Popen([str(HS), "encode", "-i", str(source), "-o", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=daemon_env(HOTSWAPD_SOCKET=endpoint, HOTSWAPD_NO_AUTOSTART="1", **env))
        deadline = time.monotonic() + 30
        while not record.exists() and time.monotonic() < deadline:
            assert job.poll() is None, job.communicate()[1]
            time.sleep(0.05)
        daemon.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = job.communicate(timeout=20)
        assert job.returncode == 3 and time.monotonic() - killed_at < 5  # 3: no daemon
        assert b"died" in stderr, stderr
        daemon.wait(10)
        daemon = launch(slow=False)
        resumed = run_hs("encode", "-i", str(source), "-o", str(output), "--resume", endpoint=endpoint, env=env)
        assert resumed.returncode == 0 and b"resumed after" in resumed.stderr, resumed.stderr
    finally:
        daemon.kill()
        daemon.wait(10)
    assert pq.read_metadata(output).num_rows == 3000


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in sentences(2000, seed=12)])
    output = tmp_path / "out.npy"
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra=NO_CACHE)) as daemon, daemon.client() as client:
        fakebackend.CONTROLS["v1"].delay = 0.05
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        first = subprocess.Popen([str(HS), "encode", "-i", str(source), "-o", str(output)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not (tmp_path / "out.npy.partial").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        second = run_hs("encode", "-i", str(source), "-o", str(output), endpoint=daemon.endpoint)
        assert second.returncode == 1 and b"another job (pid" in second.stderr, second.stderr
        fakebackend.CONTROLS["v1"].delay = 0.0
        _, stderr = first.communicate(timeout=60)
        assert first.returncode == 0, stderr
        expected = client.encode([json.loads(line)["text"] for line in source.read_text().splitlines()], "m@v1").embeddings
    np.testing.assert_array_equal(np.load(output), expected)
    assert not (tmp_path / ".out.npy.lock").exists()


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_what_would_overwrite_the_input_or_misalign_ids_is_refused(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in sentences(50, seed=13)])
    (tmp_path / "x.rejects.jsonl").write_text(source.read_text())
    (tmp_path / "d.ids.jsonl").mkdir()
    import pyarrow as pa

    pq.write_table(pa.table({"id": [10, None, 2], "text": ["a", "b", "c"]}), tmp_path / "nullid.parquet")
    write_jsonl(tmp_path / "mixed.jsonl", [{"id": 1, "text": "a"}, {"text": "b"}, {"id": 1.5, "text": "c"}, {"id": 3, "text": "d"}])
    (tmp_path / "open.csv").write_text('id,text\n1,"unterminated\n2,b\n')
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon:
        def hs(*args: str) -> tuple[int, str]:
            done = run_hs("encode", *args, endpoint=daemon.endpoint)
            return done.returncode, done.stderr.decode().strip()

        assert hs("-i", str(source), "-o", str(source).replace(".jsonl", ".jsonl")) == (1, f"hs: error: {source} is the input file; write the output elsewhere")
        assert hs("-i", str(tmp_path / "x.rejects.jsonl"), "-o", str(tmp_path / "x.parquet"))[1].endswith("is the input file; write the output elsewhere")
        assert (tmp_path / "x.rejects.jsonl").read_text() == source.read_text()
        assert hs("-i", str(source), "-o", str(tmp_path / "d.npy")) == (1, f"hs: error: {tmp_path / 'd.ids.jsonl'} is a directory; the job would write a file there")
        assert hs("-i", str(tmp_path / "nullid.parquet"), "-o", str(tmp_path / "n.npy")) == (1, "hs: error: row 2: the id None is a NoneType; ids are strings or integers")
        code, _ = hs("-i", str(tmp_path / "mixed.jsonl"), "-o", str(tmp_path / "m.jsonl"), "--on-error", "skip")
        assert code == 0
        assert [json.loads(line)["id"] for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [1, 3]
        assert [json.loads(line)["row"] for line in (tmp_path / "m.rejects.jsonl").read_text().splitlines()] == [2, 3]
        code, message = hs("-i", str(tmp_path / "open.csv"), "-o", str(tmp_path / "o.npy"))
        assert code == 1 and "open.csv" in message, message
        code, message = hs("-i", str(source), "-o", str(tmp_path / "f.npy"), "-f", "npy")
        assert code == 2 and "follows its name" in message


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_record_that_does_not_match_its_files_is_refused(start: StartDaemon, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in sentences(300, seed=14)])
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}})) as daemon, daemon.client() as client:
        fingerprint = client.encode(["x"], "m@v1").fingerprint
        facts = {"path": str(source.resolve()), "size": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns, "format": "jsonl"}
        settings = {"normalize": None, "text_field": "text", "id_field": None, "on_error": "fail"}
        cases = [
            ("a.npy", {"rows": -5}, {"lines_bytes": 0}, "unreadable"),
            ("b.npy", {}, {"lines_bytes": 10**9}, "does not hold what the job's record says"),
            ("c.parquet", {}, {"parts": ["../evil.parquet"], "id_type": "int64"}, "does not hold the parts"),
        ]
        for name, counts, sink, message in cases:
            work = tmp_path / f"{name}.partial"
            work.mkdir()
            for file in ("embeddings.npy", "ids.jsonl"):
                (work / file).write_bytes(b"\0" * 200)
            record = {"model": "m", "version": "v1", "fingerprint": fingerprint, "weights": None, "dim": DIM, "rows": 5,
                      "rejected": 0, "rejects_bytes": 0, "input": facts, "settings": {**settings, "output": name.split(".")[1]}, "sink": sink, **counts}
            (work / "job.json").write_text(json.dumps(record))
            done = run_hs("encode", "-i", str(source), "-o", str(tmp_path / name), "--resume", endpoint=daemon.endpoint)
            assert done.returncode == 1 and message.encode() in done.stderr, (name, done.stderr)
            assert not (tmp_path / name).exists()


def test_an_input_changed_during_the_job_is_not_published(start: StartDaemon, tmp_path: Path) -> None:
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(sentences(3000, seed=15)) + "\n")
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra=NO_CACHE)) as daemon, daemon.client() as client:
        def on_rows(rows: int) -> None:
            if rows >= 256 and source.stat().st_size > 10:
                source.write_text("short\n")

        with pytest.raises(JobError, match="changed while the job read it"):
            encode_file(client, "m", RowReader(source, "txt"), tmp_path / "out.npy", on_rows=on_rows)
    assert not (tmp_path / "out.npy").exists()


def test_input_to_stdout_names_a_refused_text_by_its_row(start: StartDaemon, tmp_path: Path) -> None:
    texts = sentences(600, seed=16)
    texts[400] = "long " * 40
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    source.write_text("\n" + source.read_text())  # a blank line first: rows and texts no longer count alike
    with start(fake_config(tmp_path, {"v1": {"dim": DIM}}, extra="[daemon]\nmax_text_bytes = 128\n")) as daemon:
        done = run_hs("encode", "-i", str(source), "-f", "npy", endpoint=daemon.endpoint)
    assert done.returncode == 1 and done.stderr.decode().startswith("hs: error: row 402: "), done.stderr
