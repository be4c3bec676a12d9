"""What `hs` shows while it waits: the daemon's load steps, and progress in rows.

The real `hs` runs on a pseudo-terminal against an in-process daemon whose fake versions
take their time: a load that names its steps (as an ONNX export does), a model slow per text.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_cli_output import ANSI, hs, run_on_terminal
from tests.inproc import fake_config

EXPORTING = {"load_steps": ["exporting to ONNX", "quantising to int8"], "load_step_seconds": 0.8}


def frames(screen: str) -> list[str]:
    """What the terminal showed, one redraw per item, without colours."""
    return [frame.strip() for frame in re.split(r"[\r\n]", ANSI.sub("", screen)) if frame.strip()]


def test_models_names_the_step_a_load_is_on(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": EXPORTING})) as daemon, daemon.client() as client:
        def preload() -> None:
            with daemon.client() as own:
                own.preload("m@v2")

        loading = threading.Thread(target=preload)
        loading.start()
        seen = set()
        deadline = time.monotonic() + 10
        while loading.is_alive() and time.monotonic() < deadline:
            detail = {item["version"]: item for item in client.models()[0]["version_detail"]}
            if detail["v2"]["loading"]:
                seen.add(detail["v2"]["loading"]["step"])
            assert detail["v1"]["loading"] is None
            time.sleep(0.05)
        loading.join()
        assert {"exporting to ONNX", "quantising to int8"} <= seen, seen
        assert client.models()[0]["version_detail"][1]["loading"] is None  # done: no step left behind


def test_a_switch_shows_each_step_of_the_load_it_waits_on(start: StartDaemon, tmp_path: Path, monkeypatch: object) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": EXPORTING})) as daemon:
        code, out, screen = run_on_terminal(daemon, "switch", "m", "v2", env={"HS_WAIT_SHOWN_AFTER": "0"})
        assert code == 0 and b"m: v1 -> v2" in out
        shown = "\n".join(frames(screen))
        assert "switching m to v2: m@v2 exporting to ONNX" in shown and "switching m to v2: m@v2 quantising to int8" in shown, shown
        piped = hs(daemon, "switch", "m", "v1", env={"HS_WAIT_SHOWN_AFTER": "0"})
        assert piped.returncode == 0 and piped.stderr == b""  # no terminal: not a character of it


def test_stdin_progress_counts_rows_several_times_a_second_to_100_percent(start: StartDaemon, tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line number {i}\n" for i in range(2000)))
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        fakebackend.CONTROLS["v1"].delay_per_text = 0.001  # about 2 s for the file
        started = time.monotonic()
        code, out, screen = run_on_terminal(daemon, "encode", "-f", "jsonl", stdin=lines)
        seconds = time.monotonic() - started
    assert code == 0 and out.count(b"\n") == 2000
    bars = [(int(m.group(1)), int(m.group(2).replace(",", ""))) for m in (re.search(r"(\d+)% ([\d,]+) rows", f) for f in frames(screen)) if m]
    rows_seen = sorted({rows for _, rows in bars})
    assert len(rows_seen) >= 4 * seconds * 0.5, (seconds, rows_seen)  # answers paced for several updates a second
    for quarter in (25, 50, 75):
        assert any(abs(percent - quarter) <= 10 for percent, _ in bars), (quarter, bars)
    assert (100, 2000) in bars, bars[-3:]
    assert all(percent <= 100 * rows / 2000 + 5 for percent, rows in bars)  # the bar never runs ahead of the rows


def test_index_build_progress_ends_at_100_percent(start: StartDaemon, tmp_path: Path) -> None:
    lines = tmp_path / "docs.txt"
    lines.write_text("".join(f"document {i}\n" for i in range(1500)))
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        fakebackend.CONTROLS["v1"].delay_per_text = 0.001
        code, _, screen = run_on_terminal(daemon, "index", "build", "m@v1", "--input", str(lines), "--output", str(tmp_path / "corpus"))
    assert code == 0, screen
    bars = [(int(m.group(1)), int(m.group(2).replace(",", ""))) for m in (re.search(r"(\d+)% ([\d,]+) rows", f) for f in frames(screen)) if m]
    assert (100, 1500) in bars, bars[-3:]
    assert any(20 <= percent <= 80 for percent, _ in bars), bars


def test_a_reporter_of_an_abandoned_load_cannot_leave_a_step_behind() -> None:
    """Found in review: a load past its timeout went on reporting steps nobody cleared."""
    from hotswapd.core.load_progress import LoadSteps

    steps = LoadSteps()
    key = ("m", "v2")
    abandoned = steps.reporter(key)
    abandoned("exporting to ONNX")
    assert steps.of(key) is not None and steps.of(key)["step"] == "exporting to ONNX"  # type: ignore[index]
    steps.clear(key)  # the load gave up at its timeout
    abandoned("quantising to int8")  # its thread goes on
    assert steps.of(key) is None
    fresh = steps.reporter(key)  # a new load of the same version reports again
    fresh("loading")
    assert steps.of(key)["step"] == "loading"  # type: ignore[index]
