"""The committed completion scripts match the app, and the bash one really completes."""

from __future__ import annotations

import subprocess

import pytest

from hotswap_cli.completion_scripts import render
from hotswap_cli.main import app
from tests.daemons import REPO


@pytest.mark.parametrize("name", ["hs.bash", "_hs", "hs.fish"])
def test_committed_completions_are_up_to_date(name: str) -> None:
    committed = (REPO / "completions" / name).read_text()
    assert committed == render(app)[name], (
        f"completions/{name} is out of date: run `python -m hotswap_cli.completion_scripts completions`"
    )


def complete(*words: str) -> list[str]:
    script = f"""
source {REPO / "completions" / "hs.bash"}
COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD=$(({len(words)} - 1)); _hs
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_walks_the_command_tree() -> None:
    assert "encode" in complete("hs", "")
    assert complete("hs", "enc") == ["encode"]
    assert complete("hs", "encode", "-f", "") == ["json", "jsonl", "npy"]
    assert complete("hs", "--timeout", "5", "daemon", "st") == ["start", "stop", "status"]
    assert complete("hs", "daemon", "run", "--log-level", "w") == ["warning"]
