"""`hs` warm start (issue 29): `hs encode "x" -f json` against a warm daemon, as a ratio of
`python -c "import typer, zmq"` (what any Typer + ZeroMQ command pays), measured in the
same run with the commands interleaved.

    python bench/bench_cli.py --runs 30

Target: the ratio under 1.3x (before issue 29, with every subcommand's module imported on
each call, it read 1.75-2.2x).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_core import minilm_dir, start_daemon, startup, wait_ready, write_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="samples per command, interleaved")
    args = parser.parse_args()
    # Byte-compiled as an install leaves it: a checkout would otherwise time the compiler.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "hotswapd"), str(HERE.parent / "hotswap_cli")], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="hs-bench-cli-"))
    config = write_config(workdir / "config.toml", f'[models.minilm]\nactive = "v1"\n[models.minilm.versions.v1]\nsource = "{minilm_dir()}"\ndevice = "cpu"\npreload = true\n')
    daemon = start_daemon(config, workdir)
    try:
        with daemon.client() as client:
            wait_ready(client)
            client.encode(["x"])  # the vector is cached: what is timed is the command, not the model
        figures = startup(daemon.endpoint, args.runs)
    finally:
        daemon.stop()
    base = figures["python -c 'import typer, zmq'"]
    table = Table(title=f"process wall time, median of {args.runs} (interleaved)")
    for column in ("command", "ms", "x import typer, zmq"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, value in figures.items():
        table.add_row(name, f"{value:.1f}", f"{value / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
