"""The conversion cache (ONNX and OpenVINO exports) and the children that fill it, against
what a hostile disk or a stopping daemon does (issue 17's review). A stand-in converter
(tests/fakeconverter.py) writes what a real one writes, in milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotswapd.host import children
from hotswapd.backends.support.export_cache import created_once, enforce
from hotswapd.errors import ModelLoadError

CONVERTER = "tests.fakeconverter"
FILES = ("model.bin",)


def _convert(root: Path, *arguments: str, key: str = "k1") -> dict:
    return created_once(root, key, CONVERTER, list(arguments), False, FILES)


def test_a_conversion_is_made_once_and_then_reused(tmp_path: Path) -> None:
    assert _convert(tmp_path)["exported_now"] is True
    assert _convert(tmp_path)["exported_now"] is False
    assert oct((tmp_path / "k1" / "model.bin").stat().st_mode & 0o777) == "0o444"


@pytest.mark.parametrize("damage", ["fifo", "device", "missing check", "missing file"])
def test_a_cached_conversion_with_a_file_that_is_not_one_is_made_again_not_read(tmp_path: Path, damage: str) -> None:
    """A FIFO in place of the model file hung OpenVINO's reader forever; /dev/zero spun it."""
    _convert(tmp_path)
    final = tmp_path / "k1"
    final.chmod(0o755)
    target = final / ("check.json" if damage == "missing check" else "model.bin")
    target.unlink()
    if damage == "fifo":
        os.mkfifo(target)
    elif damage == "device":
        target.symlink_to("/dev/zero")
    # before: a missing check.json beside the other files was never recovered (rename onto a full directory failed)
    assert _convert(tmp_path)["exported_now"] is True
    assert (final / "model.bin").read_bytes() == b"weights"


def test_a_symlink_in_the_cache_is_replaced_and_what_it_points_at_is_left_alone(tmp_path: Path) -> None:
    """Before: the cache followed the link and made the files it pointed at read-only for everyone."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "id_rsa").write_text("secret")
    (victim / "id_rsa").chmod(0o600)
    (victim / "check.json").write_text('{"bad": 1}')
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "k1").symlink_to(victim)
    assert _convert(cache)["exported_now"] is True
    assert not (cache / "k1").is_symlink()
    assert oct((victim / "id_rsa").stat().st_mode & 0o777) == "0o600"


def test_two_loads_of_one_key_at_once_both_get_the_conversion(tmp_path: Path) -> None:
    """Before: both staged into KEY.tmp-PID, and one load failed with FileNotFoundError."""
    results: list[object] = []

    def load() -> None:
        try:
            results.append(_convert(tmp_path, "--sleep", "0.3")["mean_cosine"])
        except Exception as exc:  # noqa: BLE001 -- the test reports it
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [0.999, 0.999]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["k1"]


def test_a_staging_directory_left_by_a_killed_conversion_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"k1.tmp-{dead.pid}-abcd1234").mkdir(parents=True)
    (tmp_path / f"k1.tmp-{os.getpid()}-live0000").mkdir()  # a live process's: kept
    _convert(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["k1", f"k1.tmp-{os.getpid()}-live0000"]


def test_a_failed_conversion_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="the conversion \\(tests.fakeconverter\\) failed: conversion exploded"):
        _convert(tmp_path, "--fail")
    assert list(tmp_path.iterdir()) == []


def test_a_nan_check_is_refused_and_not_read_from_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="refused"):
        enforce({"mean_cosine": float("nan"), "min_cosine": 0.5, "sample_size": 21}, 0.99, "x")
    _convert(tmp_path)
    (tmp_path / "k1").chmod(0o755)
    (tmp_path / "k1" / "check.json").chmod(0o644)
    (tmp_path / "k1" / "check.json").write_text('{"mean_cosine": NaN, "min_cosine": NaN, "sample_size": 21}')
    assert _convert(tmp_path)["exported_now"] is True  # not trusted: made again


def test_stopping_ends_a_running_child_and_its_failure_names_the_signal(tmp_path: Path) -> None:
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(lambda: children.run([sys.executable, "-c", "import time; time.sleep(60)"], 120))))
    started = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 10
    while not children._running and time.monotonic() < deadline:
        time.sleep(0.01)
    children.stop_all()
    thread.join(10)
    assert isinstance(outcome[0], children.Stopped) and time.monotonic() - started < 10
    children.start_accepting()  # a daemon starting again
    killed = children.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], 30)
    assert children.failure(killed) == "ended by SIGKILL"  # before: "(no output)"
    assert children.run([sys.executable, "-c", "pass"], 30).returncode == 0  # later children still run


@pytest.fixture
def accepting() -> Iterator[None]:
    yield
    children.start_accepting()  # the next test in this process runs children again


def test_after_stopping_no_child_starts(tmp_path: Path, accepting: None) -> None:
    """Before: a worker thread that reached ``run`` after the daemon's stop_all (a loaded
    machine) started its measurement anyway and left it running behind the stopped daemon."""
    children.stop_all()
    marker = tmp_path / "ran"
    with pytest.raises(children.Stopped):
        children.run([sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"], 30)
    time.sleep(0.5)
    assert not marker.exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_stopping_ends_the_childs_own_children_even_when_its_handler_cannot_run(tmp_path: Path, accepting: None) -> None:
    """Before: a measurement whose Python sat in a long C call never ran its SIGTERM handler;
    SIGKILL ended it alone and its conversions ran on. Here the child ignores SIGTERM and
    holds a grandchild; both end."""
    pid_file = tmp_path / "grandchild"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(grandchild.pid))\n"
        "time.sleep(120)\n"
    )
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(lambda: children.run([sys.executable, "-c", script], 120))))
    thread.start()
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    children.stop_all()
    thread.join(20)
    assert isinstance(outcome[0], children.Stopped)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _catch(work):  # type: ignore[no-untyped-def]
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 -- returned for the assertion
        return exc


def test_a_cached_check_of_the_other_kind_is_converted_again_not_read(tmp_path: Path) -> None:
    """Before: a rerank conversion whose check.json held an embedder's cosines failed every
    load with a bare KeyError ('spearman_min') and was never converted again."""
    made = created_once(tmp_path, "k1", CONVERTER, [], False, FILES)  # an embedder's check (cosines)
    assert made["exported_now"] is True
    with pytest.raises(ModelLoadError, match="no usable result"):  # the converter writes cosines again: typed, named
        created_once(tmp_path, "k1", CONVERTER, [], False, FILES, kind="ranks")
    assert created_once(tmp_path, "k1", CONVERTER, [], False, FILES)["exported_now"] is False  # what the ranks attempt made serves vectors


def test_a_cross_encoders_tokenizer_and_pair_length_are_checked_before_any_conversion(tmp_path: Path) -> None:
    """Before: a FIFO tokenizer.json hung the conversion for 30 minutes, and a max_seq_length
    past the model's positions failed every long pair inside the graph."""
    from hotswapd.backends.support.graph_cross_encoder import pair_length, usable_tokenizer

    os.mkfifo(tmp_path / "tokenizer.json")
    with pytest.raises(ModelLoadError, match="not a regular file"):
        usable_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 128}')
    assert pair_length(tmp_path, None) == 128 and pair_length(tmp_path, 64) == 64
    for wrong in (129, 4):
        with pytest.raises(ModelLoadError, match="takes 8 to 128 tokens"):
            pair_length(tmp_path, wrong)
