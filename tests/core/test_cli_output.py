"""Issue 13: output that fits the terminal and the pipe, and the conventions users bring.

Every command runs as the real `hs` console script against an in-process daemon with fake
models. ``TTY_COMPATIBLE=1`` and ``COLUMNS=80`` make it draw as on an 80-column terminal;
without them its stdout is a pipe.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import threading
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests import fakebackend
from tests.conftest import HS, run_hs
from tests.core.conftest import StartDaemon
from tests.daemons import daemon_env
from tests.inproc import fake_config

MODEL = "multilingual-e5-large"
VERSIONS = ("2026-11-rollout-candidate", "2026-10-baseline")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TERMINAL_80 = {"TTY_COMPATIBLE": "1", "COLUMNS": "80", "LINES": "50"}


def hs(daemon: object, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_hs(*args, endpoint=daemon.endpoint, stdin=stdin, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"], **(env or {})})  # type: ignore[attr-defined]


def long_config(tmp_path: Path) -> str:
    deep = tmp_path / ("a-rather-long-directory-name-for-model-weights/" * 3)  # a source path wider than the terminal
    deep.mkdir(parents=True)
    return fake_config(deep, {VERSIONS[1]: {}, VERSIONS[0]: {}}, model=MODEL, extra=f'[daemon]\ndefault_model = "{MODEL}"\n')


def assert_fits(output: str, *, width: int = 80, whole: tuple[str, ...] = ()) -> None:
    output = ANSI.sub("", output)
    for line in output.splitlines():
        assert cell_len(line) <= width, f"{cell_len(line)} columns: {line!r}"
    assert "…" not in output, output
    for word in whole:
        assert word in output, f"{word!r} cut or missing in:\n{output}"


def test_every_table_fits_80_columns_with_names_versions_and_times_whole(start: StartDaemon, tmp_path: Path) -> None:
    with start(long_config(tmp_path)) as daemon, daemon.client() as client:
        client.switch(MODEL, VERSIONS[0])
        client.switch(MODEL, VERSIONS[1], "canary", share=10)
        models = hs(daemon, "models", env=TERMINAL_80)
        assert models.returncode == 0, models.stderr
        assert_fits(models.stdout.decode(), whole=(MODEL, *VERSIONS))
        status = hs(daemon, "status", env=TERMINAL_80)
        assert_fits(status.stdout.decode(), whole=(MODEL, VERSIONS[1]))
        history = hs(daemon, "history", "--all", env=TERMINAL_80).stdout.decode()
        assert_fits(history, whole=(MODEL, *VERSIONS))
        times = [line.split()[0] for line in ANSI.sub("", history).splitlines() if "switch" in line]
        assert times and all(len(t) == 8 and t.count(":") == 2 for t in times), history  # HH:MM:SS today
        compare = hs(daemon, "compare", MODEL, *VERSIONS, env=TERMINAL_80)
        assert compare.returncode == 0, compare.stderr
        assert_fits(compare.stdout.decode(), whole=VERSIONS)
        bench = hs(daemon, "bench", f"{MODEL}@{VERSIONS[0]}", f"{MODEL}@{VERSIONS[1]}", "--duration", "0.5", env=TERMINAL_80)
        assert bench.returncode == 0, bench.stderr
        assert_fits(bench.stdout.decode(), whole=(f"{MODEL}@{VERSIONS[0]}", f"{MODEL}@{VERSIONS[1]}"))


def test_long_messages_go_under_the_table(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon:
        fakebackend.CONTROLS["v2"].fail_load = "weights are corrupt: checksum mismatch in layer 7"
        assert hs(daemon, "preload", "m@v2").returncode == 1
        out = hs(daemon, "models", env=TERMINAL_80).stdout.decode()
        assert_fits(out)
        note = [line for line in out.splitlines() if line.startswith("[1] ")]
        assert note and "checksum mismatch in layer 7" in note[0], out


def test_piped_listings_are_tab_separated_with_a_header(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        client.switch("m", "v2")
        lines = hs(daemon, "models").stdout.decode().splitlines()
        header = lines[0].split("\t")
        assert header[:4] == ["model", "version", "active", "state"]
        rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
        assert [(r["version"], r["active"], r["state"]) for r in rows] == [("v1", "-", "loaded"), ("v2", "*", "loaded")]
        history = hs(daemon, "history").stdout.decode().splitlines()
        assert history[0].startswith("when\tmodel\tevent") and "│" not in "".join(history) and "─" not in "".join(history)
        assert history[1].split("\t")[1:5] == ["m", "switch", "v1", "v2"]


def test_models_lists_every_configured_version_and_quiet_lists_names(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}, "v3": {}})) as daemon, daemon.client() as client:
        client.switch("m", "v2", "canary", share=25)
        rows = json.loads(hs(daemon, "models", "--json").stdout)
        detail = {item["version"]: item for item in rows[0]["version_detail"]}
        assert detail["v1"]["active"] and detail["v1"]["share"] == 75 and detail["v1"]["state"] == "loaded"
        assert detail["v2"]["share"] == 25 and detail["v2"]["state"] == "loaded"
        assert detail["v3"]["share"] == 0 and detail["v3"]["state"] == "not loaded" and detail["v3"]["memory_bytes"] is None
        assert detail["v1"]["dimension"] == 8
        table = hs(daemon, "models").stdout.decode().splitlines()
        assert [line.split("\t")[1:4] for line in table[1:]] == [["v1", "* 75%", "loaded"], ["v2", "25%", "loaded"], ["v3", "-", "not loaded"]]
        assert hs(daemon, "models", "-q").stdout.decode() == "m\n"


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_read_only_commands_never_start_a_daemon(tmp_path: Path) -> None:
    endpoint = f"ipc:///tmp/hs-ro-{os.getpid()}-{tmp_path.name[-6:]}.sock"
    env = {"HOTSWAPD_NO_AUTOSTART": "", "XDG_STATE_HOME": str(tmp_path / "state"), "HOTSWAPD_CONFIG": str(tmp_path / "none.toml")}
    for command in (["status"], ["models"], ["history"], ["metrics"], ["daemon", "status"]):
        done = run_hs(*command, endpoint=endpoint, env=env, timeout=30)
        assert done.returncode == 3, (command, done.stderr)
        assert b"starting hotswapd" not in done.stderr
    assert not Path(endpoint.removeprefix("ipc://")).exists()


def test_a_config_other_than_the_running_daemons_is_named(start: StartDaemon, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("")
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        warned = hs(daemon, "--config", str(other), "status", "--json")
        assert warned.returncode == 0
        assert f"not {other}" in warned.stderr.decode() and str(daemon.config_path) in warned.stderr.decode()
        same = hs(daemon, "status", "--json", "--config", str(daemon.config_path))  # after the command, too
        assert same.returncode == 0 and same.stderr == b""


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_usage_errors_are_one_line_with_exit_2() -> None:
    for args, says in ((["encode", "--bogus"], "No such option: --bogus"), (["compare", "m"], "Missing argument"), (["nope"], "No such command")):
        done = run_hs(*args)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("hs: error: ") and says in lines[0], done.stderr


def _help_with_example(text: str) -> bool:
    return text.startswith("Usage: ") and "Example" in text


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_version_short_help_and_examples_everywhere() -> None:
    import typer

    from hotswap_cli.main import app

    version = run_hs("-V")
    assert version.returncode == 0 and version.stdout.decode().startswith("hs 0.")
    assert run_hs("--version").stdout == version.stdout
    assert run_hs("encode", "-h").stdout == run_hs("encode", "--help").stdout

    def leaves(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", {})
        return [p for name, sub in children.items() for p in leaves(sub, (*path, name))] if children else [path]

    from typer.testing import CliRunner

    runner = CliRunner()  # in-process: one `hs` start per command would cost seconds
    missing = [" ".join(path) for path in leaves(typer.main.get_command(app)) if not _help_with_example(runner.invoke(app, [*path, "-h"]).output)]
    assert not missing, f"help without an example: {missing}"


def test_global_options_after_the_command(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        env = daemon_env(HOTSWAPD_NO_AUTOSTART="1")
        env.pop("HOTSWAPD_SOCKET", None)
        done = subprocess.run([str(HS), "encode", "x", "-f", "jsonl", "--socket", daemon.endpoint, "--timeout", "5"], capture_output=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["version"] == "v1"


def run_on_terminal(daemon: object, *args: str, stdin: Path | None = None, stdout_tty: bool = False, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """`hs` with stderr (and stdout, if asked) on a pseudo-terminal, as in an interactive shell;
    the terminal is read while it runs (a full pty buffer would stall a long progress display)."""
    main, secondary = pty.openpty()
    env = daemon_env(HOTSWAPD_NO_AUTOSTART="1", HOTSWAPD_SOCKET=daemon.endpoint, COLUMNS="100", **(env or {}))  # type: ignore[attr-defined]
    seen = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side closed: the command is over
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    with open(stdin or os.devnull, "rb") as source:
        done = subprocess.run(
            [str(HS), *args], stdin=source, stdout=secondary if stdout_tty else subprocess.PIPE, stderr=secondary, env=env, timeout=60
        )
    os.close(secondary)
    reader.join(10)
    os.close(main)
    return done.returncode, done.stdout or b"", bytes(seen).decode(errors="replace")


def test_npy_to_a_terminal_is_refused_with_a_hint(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        code, _, terminal = run_on_terminal(daemon, "encode", "x", "-f", "npy", stdout_tty=True)
        assert code == 2 and "> vectors.npy" in terminal, terminal


def test_a_file_on_stdin_ends_with_a_summary_line_on_the_terminal(start: StartDaemon, tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(700)))
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        code, out, terminal = run_on_terminal(daemon, "encode", "-f", "jsonl", stdin=lines)
        assert code == 0 and out.count(b"\n") == 700
        summary = [line for line in ANSI.sub("", terminal).splitlines() if line.startswith("encoded ")]
        assert summary and "encoded 700 rows in" in summary[-1] and "rows/s) with m@v1" in summary[-1], terminal


def test_compare_times_the_model_not_the_cache(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {"scale": 2.0}})) as daemon:
        first = json.loads(hs(daemon, "compare", "m", "v1", "v2", "--json").stdout)
        before = fakebackend.CONTROLS["v1"].encodes
        again = json.loads(hs(daemon, "compare", "m", "v1", "v2", "--json").stdout)
        assert fakebackend.CONTROLS["v1"].encodes > before  # the model ran again: no cache hit timed
        assert again["mean_cosine"] == pytest.approx(first["mean_cosine"])
        table = hs(daemon, "compare", "m", "v1", "v2", env=TERMINAL_80).stdout.decode()
        cosine_line = next(line for line in table.splitlines() if "mean cosine" in line)
        assert len(cosine_line.split()) == 3, table  # "mean cosine <one figure>", under no version's column


def test_at_80_columns_the_telling_columns_stay_and_pipes_get_one_clean_table(start: StartDaemon, tmp_path: Path) -> None:
    """Before: `hs models` dropped path (torch or onnx-int8), `hs history` hid a forced
    switch, `hs compare` piped two tables under a `col0` header."""
    with start(fake_config(tmp_path, {"v1": {}, "v2": {"shift": 3}})) as daemon:
        assert hs(daemon, "switch", "m", "v2", "--force").returncode == 0
        models = ANSI.sub("", hs(daemon, "models", env=TERMINAL_80).stdout.decode())
        assert_fits(models)
        header = next(line for line in models.splitlines() if "version" in line)
        assert header.split()[:5] == ["model", "version", "active", "state", "path"], models
        history = ANSI.sub("", hs(daemon, "history", env=TERMINAL_80).stdout.decode())
        assert_fits(history)
        assert "done, forced" in history, history
        compared = hs(daemon, "compare", "m", "v1", "v2").stdout.decode().splitlines()
        assert compared[0] == "measure\tversion\tvalue" and all(len(line.split("\t")) == 3 for line in compared), compared
        assert {line.split("\t")[1] for line in compared[1:]} == {"v1", "v2", "v1+v2"}
        # `hs bench` piped: the header first (no blank line), the marker in its own column;
        # its history shows the cosine it recorded as the agreement.
        bench = hs(daemon, "bench", "m@v1", "m@v2", "--duration", "0.5").stdout.decode().splitlines()
        assert bench[0].split("\t")[:2] == ["version", "top"] and [row.split("\t")[0] for row in bench[1:]] == ["m@v1", "m@v2"], bench
        history_rows = [row.split("\t") for row in hs(daemon, "bench", "--history").stdout.decode().splitlines()]
        agreement = history_rows[0].index("agreement")
        assert history_rows[-1][1] == "m@v2" and history_rows[-1][agreement] != "-", history_rows


def test_doctor_folds_its_lines_to_the_terminal_and_keeps_one_line_per_check_in_a_pipe(tmp_path: Path) -> None:
    """Before: `hs doctor` lines ran to 247 characters on an 80-column terminal."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(tmp_path / "s"), "XDG_CACHE_HOME": str(tmp_path / "k")}
    socket = f"ipc://{tmp_path}/none.sock"
    shown = run_hs("doctor", endpoint=socket, env={**env, **TERMINAL_80}).stdout.decode()
    assert all(cell_len(line) <= 80 for line in shown.splitlines() if " " in line.strip()), shown  # an unbreakable path may not fold
    assert any(line.startswith(" " * 13 + "fix: ") for line in shown.splitlines()), shown
    piped = run_hs("doctor", endpoint=socket, env=env).stdout.decode().splitlines()
    assert all(line.split()[0] in ("ok", "warn", "fail") for line in piped) and any(" — fix: " in line for line in piped), piped
