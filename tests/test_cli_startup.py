"""`hs` must start fast: the CLI layer never imports the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ["torch", "sentence_transformers", "transformers", "onnxruntime", "numpy", "pydantic", "rich", "psutil"]


def imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    ["import hotswap_cli.main", "from hotswapd import Client", "import hotswapd.wire.protocol, hotswapd.errors"],
)
def test_light_imports(code: str) -> None:
    heavy = {name for name in imported_after(code) if name.split(".")[0] in HEAVY}
    assert not heavy, f"{code!r} imports {sorted(heavy)}"


def test_hs_help_imports_nothing_heavy() -> None:
    probe = "import sys; sys.argv = ['hs', '--help']\nfrom hotswap_cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    loaded = imported_after(probe)
    assert not {name for name in loaded if name.split(".")[0] in {"torch", "sentence_transformers", "numpy", "pydantic"}}


def test_a_command_imports_no_other_commands_module() -> None:
    """`hs encode` registers encode only (issue 29: every start imported every command's
    module, bench's history and statistics included); `hs --help` still lists them all."""
    from hotswap_cli.main import COMMANDS

    probe = "sys.argv = ['hs', 'encode', '--help']\nfrom hotswap_cli.main import run\ntry:\n    run()\nexcept SystemExit:\n    pass"
    loaded = imported_after(probe)
    others = {f"hotswap_cli.{module}" for _, module, _ in COMMANDS} - {"hotswap_cli.encode"}
    assert not others & loaded, sorted(others & loaded)
    assert "hotswap_cli.encode" in loaded
    listed = subprocess.run([sys.executable, "-m", "hotswap_cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert all(f" {name} " in listed for name, _, _ in COMMANDS)


def test_help_offers_only_our_own_completions() -> None:
    """Typer's --install-completion was offered beside the scripts the README ships (issue 29)."""
    listed = subprocess.run([sys.executable, "-m", "hotswap_cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--install-completion" not in listed and "--show-completion" not in listed
