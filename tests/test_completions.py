"""The committed completion scripts match the app, and each really completes in its shell.

bash: ``_hs`` is called with COMP_LINE/COMP_WORDS/COMP_CWORD set as readline sets them
(COMP_WORDBREAKS splits ``--model=m@`` into ``--model``, ``=``, ``m``, ``@``), and one
test types into a real interactive bash on a pty to hold that emulation to readline.
zsh: an interactive ``zsh -f`` on a pty loads ``_hs`` through compinit; Tab is bound to a
widget that runs ``complete-word`` with ``compadd`` wrapped to write what it was given
(after zsh's own matching against the word) to a file. fish: ``complete -C LINE``.

Shells missing on a developer's machine skip these tests; in CI (``CI`` set) they fail.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hotswap_cli.completion_scripts import LIST_AWK, render
from hotswap_cli.main import app
from hotswap_cli.output import print_json
from tests.daemons import REPO, daemon_env
from tests.inproc import InprocDaemon, fake_config, inproc_daemon

SHELLS = ["bash", "zsh", "fish"]
SCRIPTS = REPO / "completions"
DONE = "<<done>>"
Complete = Callable[[str], list[str]]


@pytest.mark.parametrize("name", ["hs.bash", "_hs", "hs.fish"])
def test_committed_completions_are_up_to_date(name: str) -> None:
    committed = (SCRIPTS / name).read_text()
    assert committed == render(app)[name], (
        f"completions/{name} is out of date: run `python -m hotswap_cli.completion_scripts completions`"
    )


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{shell} is not installed; CI must test its completion (.ci/run installs it)")
        pytest.skip(f"{shell} is not installed")
    return path


def shell_env(home: Path, endpoint: str | None, *, with_hs: bool = True) -> dict[str, str]:
    """`hs` from this venv on PATH (or no `hs` at all); a daemon that is not running unless one is given."""
    env = daemon_env(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"), TERM="xterm")
    venv = str(Path(sys.executable).parent)
    path = [entry for entry in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if entry != venv]
    env["PATH"] = os.pathsep.join([venv, *path] if with_hs else path)
    env["HOTSWAPD_SOCKET"] = endpoint or f"ipc://{home}/no-daemon.sock"
    env.setdefault("XDG_STATE_HOME", str(home / "state"))
    return env


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


# --- bash ----------------------------------------------------------------------------


def bash_words(line: str) -> list[str]:
    """COMP_WORDS as readline makes them: runs of COMP_WORDBREAKS characters are words."""
    words = [part for token in line.split() for part in re.findall(r"[=@:]+|[^=@:]+", token)]
    return words + [""] if line.endswith(" ") else words


def bash_complete(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    words = bash_words(line)
    script = f"""
source {shlex.quote(str(SCRIPTS / "hs.bash"))}
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}
_hs
for reply in "${{COMPREPLY[@]}}"; do printf '%s\\n' "$reply"; done
"""
    done = subprocess.run(["bash", "--norc", "-c", script], check=False, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    # Bash replaces its own last word only (after a = or @): show the whole token, as typed.
    before = (line.split(" ")[-1])[: len(line.split(" ")[-1]) - len(words[-1])]
    return unique([before + reply for reply in done.stdout.splitlines()])


# --- zsh and bash on a pty -----------------------------------------------------------

ZSH_INIT = r"""
bindkey -e
unset zle_bracketed_paste
fpath=("$HS_SCRIPTS" $fpath)
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' completer _complete
compadd() {
    # Calls that only collect matches into arrays (-O, -A, -D) are not the answer.
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
    local -a hits; local -A given
    zparseopts -E -A given P: p:
    builtin compadd -A hits "$@"
    local h; for h in $hits; do print -r -- "$IPREFIX${given[-P]}${given[-p]}$h" >> $HS_OUT; done
}
hs-capture() { zle complete-word; print -r -- '<<done>>' >> $HS_OUT }
zle -N hs-capture
bindkey '^I' hs-capture
exec 2>>$HS_ERR  # ZLE draws on the terminal still; errors go where the test reads them
print -r -- '<<done>>' >> $HS_OUT
"""

BASH_INIT = r"""
source "$HS_SCRIPTS/hs.bash"
eval "$(declare -f _hs | sed '1s/_hs/_hs_real/')"
_hs() {
    _hs_real 2>>"$HS_ERR"
    local c before="${COMP_LINE:0:COMP_POINT}"
    before="${before##*[[:space:]]}"; before="${before%"${COMP_WORDS[COMP_CWORD]}"}"
    for c in "${COMPREPLY[@]}"; do printf '%s\n' "$before$c"; done >> "$HS_OUT"
    echo '<<done>>' >> "$HS_OUT"
}
echo '<<done>>' >> "$HS_OUT"
"""


class PtyShell:
    """An interactive shell on a pseudo-terminal: type a line and Tab, read what was offered."""

    def __init__(self, argv: list[str], init: str, env: dict[str, str], cwd: Path) -> None:
        files = Path(tempfile.mkdtemp(prefix=f"{Path(argv[0]).name}-", dir=cwd.parent))
        self.out, self.errors, init_file = files / "offered", files / "errors", files / "init"
        self.errors.write_text("")
        init_file.write_text(init)
        self.master, slave = pty.openpty()
        env = {**env, "HS_OUT": str(self.out), "HS_ERR": str(self.errors), "HS_SCRIPTS": str(SCRIPTS), "PS1": "$ "}
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
        os.close(slave)
        self._send(f"source {shlex.quote(str(init_file))}\n")

    def _send(self, text: str) -> list[str]:
        self.out.unlink(missing_ok=True)
        os.write(self.master, text.encode())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    os.read(self.master, 65536)  # the terminal's output: drained, not read
                except OSError:
                    break
            if self.out.exists() and self.out.read_text().endswith(DONE + "\n"):
                return self.out.read_text().splitlines()[:-1]
            assert self.process.poll() is None, f"{self.process.args} exited {self.process.returncode}"
        raise AssertionError(f"no completion from {self.process.args} for {text!r}")

    def complete(self, line: str) -> list[str]:
        offered = self._send(line + "\t")
        os.write(self.master, b"\x15")  # ^U: clear the line for the next one
        errors = self.errors.read_text()
        assert not errors, f"{self.process.args} completing {line!r}: {errors}"
        return unique(offered)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        os.close(self.master)


# --- fish ----------------------------------------------------------------------------


def fish_complete(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    script = 'source $HS_SCRIPT; and complete -C "$HS_LINE"'
    environment = {**env, "HS_SCRIPT": str(SCRIPTS / "hs.fish"), "HS_LINE": line}
    done = subprocess.run(["fish", "--no-config", "-c", script], check=False, capture_output=True, text=True, env=environment, cwd=cwd, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return unique([row.split("\t")[0] for row in done.stdout.splitlines()])


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("completion-home")
    cwd = home / "cwd"
    cwd.mkdir()
    for name in ("input.txt", "inside.toml", "other.txt"):
        (cwd / name).write_text("text\n")
    return cwd


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InprocDaemon]:
    """Models m (v1, v2) and other (a, b-2), served in this process."""
    workdir = tmp_path_factory.mktemp("completion-daemon")
    config = fake_config(workdir, {"v1": {}, "v2": {}}, model="m") + fake_config(workdir, {"a": {}, "b-2": {}}, model="other")
    with pytest.MonkeyPatch.context() as monkeypatch, inproc_daemon(config, workdir, monkeypatch) as running:
        yield running


def completer(shell: str, workdir: Path, endpoint: str | None, *, with_hs: bool = True) -> Iterator[Complete]:
    need(shell)
    env = shell_env(workdir.parent, endpoint, with_hs=with_hs)
    if shell == "bash":
        yield lambda line: bash_complete(line, env, workdir)
    elif shell == "fish":
        yield lambda line: fish_complete(line, env, workdir)
    else:
        session = PtyShell(["zsh", "-f", "-i"], ZSH_INIT, env, workdir)
        try:
            yield session.complete
        finally:
            session.close()


@pytest.fixture(scope="module", params=SHELLS)
def complete(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Complete]:
    """Completion in each shell, with no daemon running."""
    yield from completer(request.param, workdir, None)


@pytest.fixture(scope="module", params=SHELLS)
def complete_live(request: pytest.FixtureRequest, workdir: Path, daemon: InprocDaemon) -> Iterator[Complete]:
    """Completion in each shell, against the in-process daemon."""
    yield from completer(request.param, workdir, daemon.endpoint)


# --- the tests -----------------------------------------------------------------------


def test_fish_script_parses_and_loads_cleanly(workdir: Path) -> None:
    need("fish")
    env = shell_env(workdir.parent, None)
    checked = subprocess.run(["fish", "--no-config", "-n", str(SCRIPTS / "hs.fish")], check=False, capture_output=True, text=True, env=env)
    assert checked.returncode == 0 and not checked.stderr, checked.stderr
    assert fish_complete("hs sw", env, workdir) == ["switch"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_subcommands_complete(complete: Complete) -> None:
    assert complete("hs sw") == ["switch"]
    assert "encode" in complete("hs ") and "daemon" in complete("hs ")
    assert complete("hs enc") == ["encode"]


def test_nested_commands_complete(complete: Complete) -> None:
    assert sorted(complete("hs daemon st")) == ["start", "status", "stop"]
    # A root option's value is not taken for a command.
    assert sorted(complete("hs --timeout 5 daemon st")) == ["start", "status", "stop"]
    assert sorted(complete("hs config ")) == ["init", "path", "reload", "validate"]


def test_option_values_with_choices(complete: Complete) -> None:
    assert sorted(complete("hs encode -f ")) == ["json", "jsonl", "npy"]
    assert sorted(complete("hs encode --format js")) == ["json", "jsonl"]
    assert complete("hs daemon run --log-level w") == ["warning"]


def test_options_of_the_command_at_hand(complete: Complete) -> None:
    offered = complete("hs encode --")
    assert {"--model", "--format", "--help"} <= set(offered)
    assert "--socket" not in offered and "--canary" not in offered
    assert {"--socket", "--config", "--timeout"} <= set(complete("hs --"))


def test_file_names_complete(complete: Complete) -> None:
    assert sorted(complete("hs --config in")) == ["input.txt", "inside.toml"]
    assert sorted(complete("hs compare m v1 v2 --input in")) == ["input.txt", "inside.toml"]
    assert sorted(complete("hs bench --input in")) == ["input.txt", "inside.toml"]
    assert sorted(complete("hs config validate in")) == ["input.txt", "inside.toml"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_without_a_daemon_models_complete_to_nothing_quickly(complete: Complete) -> None:
    started = time.monotonic()
    assert complete("hs switch ") == []
    assert complete("hs encode -m m@") == []
    assert time.monotonic() - started < 20
    assert complete("hs keys add ") == []  # a client's name: nothing to offer


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
@pytest.mark.parametrize("shell", SHELLS)
def test_without_hs_installed_nothing_breaks(shell: str, workdir: Path) -> None:
    if shutil.which("hs", path=shell_env(workdir.parent, None, with_hs=False)["PATH"]):
        pytest.skip("another hs is on PATH")
    for complete in completer(shell, workdir, None, with_hs=False):
        assert complete("hs switch ") == []  # and no error: the bash and fish harnesses check stderr
        assert complete("hs encode -m m@") == []
        assert complete("hs sw") == ["switch"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_model_names_complete(complete_live: Complete) -> None:
    assert sorted(complete_live("hs preload ")) == ["m", "other"]
    assert complete_live("hs evict o") == ["other"]
    assert sorted(complete_live("hs switch ")) == ["m", "other"]
    assert sorted(complete_live("hs encode -m ")) == ["m", "other"]
    assert complete_live("hs --timeout 30 rollback o") == ["other"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_versions_complete(complete_live: Complete) -> None:
    assert sorted(complete_live("hs switch m ")) == ["v1", "v2"], "hs switch MODEL <Tab> offers MODEL's versions (`hs models --json` rows need \"versions\")"
    assert complete_live("hs switch other b") == ["b-2"]
    assert sorted(complete_live("hs switch --canary 5 other ")) == ["a", "b-2"]
    assert sorted(complete_live("hs compare m v1 ")) == ["v1", "v2"]


def test_model_at_version_completes(complete_live: Complete) -> None:
    assert sorted(complete_live("hs encode -m m@")) == ["m@v1", "m@v2"]
    assert sorted(complete_live("hs encode --model m@v")) == ["m@v1", "m@v2"]
    assert sorted(complete_live("hs encode --model=other@")) == ["--model=other@a", "--model=other@b-2"]
    assert sorted(complete_live("hs bench m@v1 other@")) == ["other@a", "other@b-2"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_bash_under_readline_splits_words_as_the_tests_assume(workdir: Path, daemon: InprocDaemon) -> None:
    need("bash")
    env = shell_env(workdir.parent, daemon.endpoint)
    session = PtyShell(["bash", "--norc", "--noprofile", "-i"], BASH_INIT, env, workdir)
    try:
        for line, expected in {
            "hs encode --model=m@": ["--model=m@v1", "--model=m@v2"],
            "hs encode -m other@b": ["other@b-2"],
            "hs --timeout=5 daemon st": ["start", "status", "stop"],
            "hs switch m ": ["v1", "v2"],
        }.items():
            assert sorted(session.complete(line)) == sorted(bash_complete(line, env, workdir)) == expected, line
    finally:
        session.close()


ROWS = [
    {"name": "m", "version": "v1", "versions": ["v1", "v2"], "loaded_detail": [{"version": "v9", "device": "cpu"}], "rollout": {"name": "x"}},
    {"name": "empty", "version": "v1", "versions": []},
    {"name": "old", "loaded_versions": ["z"], "version": "v3"},  # an hs without "versions": the active one
]


@pytest.mark.parametrize(("want", "model", "expected"), [
    ("models", "", ["m", "empty", "old"]),
    ("versions", "m", ["v1", "v2"]),
    ("specs", "m", ["m@v1", "m@v2"]),
    ("versions", "empty", []),
    ("versions", "old", ["v3"]),
    ("versions", "nosuch", []),
])
def test_the_listing_reads_what_hs_models_json_prints(capsys: pytest.CaptureFixture[str], want: str, model: str, expected: list[str]) -> None:
    need("awk")
    print_json(ROWS)  # the printer `hs models --json` uses: the layout LIST_AWK relies on
    printed = capsys.readouterr().out
    assert printed == json.dumps(ROWS, indent=2) + "\n"
    done = subprocess.run(["awk", "-v", f"want={want}", "-v", f"model={model}", LIST_AWK], input=printed, capture_output=True, text=True, check=True)
    assert done.stdout.split() == expected
