"""The ``hs`` app: global options, command registration, and the one error handler.

Start-up time matters here (``hs encode "x"`` in a shell loop): this package imports the
client and protocol layer only, and rich only when it draws something. The command modules
deliberately do *not* use ``from __future__ import annotations``: Typer would then eval
every annotation string on every start, which cost 11 ms of a ~50 ms budget (measured).
"""


import os
import sys
from typing import Annotated

import typer

from hotswapd.client import DEFAULT_TIMEOUT
from hotswapd.errors import Busy, ConfigError, DaemonNotRunning, HotswapError

from hotswap_cli import bench, compare, config, daemon, doctor, encode, keys, models, switching
from hotswap_cli.settings import Settings, autostart_default

app = typer.Typer(
    name="hs",
    help="Talk to hotswapd: embed texts, manage models, run the daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(encode.encode)
app.command()(models.models)
app.command()(models.preload)
app.command()(models.evict)
app.command()(models.status)
app.command()(switching.switch)
app.command()(switching.rollback)
app.command()(switching.history)
app.command()(compare.compare)
app.command()(bench.bench)
app.command()(models.metrics)
app.command()(doctor.doctor)
app.add_typer(daemon.app, name="daemon")
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = daemon.EXIT_NOT_RUNNING
EXIT_BUSY = 75  # sysexits EX_TEMPFAIL: the daemon's queue is full; retrying later will work


@app.callback()
def main(
    ctx: typer.Context,
    socket: Annotated[str | None, typer.Option(help="Daemon endpoint: ipc://PATH, tcp://127.0.0.1:PORT or a path.", envvar="HOTSWAPD_SOCKET", show_envvar=True)] = None,
    config_file: Annotated[str | None, typer.Option("--config", help="Config file for a daemon this command starts.", envvar="HOTSWAPD_CONFIG", show_envvar=True)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the daemon's answer.", min=0.001)] = DEFAULT_TIMEOUT,
    no_autostart: Annotated[bool, typer.Option("--no-autostart", help="Fail instead of starting a daemon when none runs (env HOTSWAPD_NO_AUTOSTART=1).")] = False,
) -> None:
    source = ctx.get_parameter_source("config_file")
    ctx.obj = Settings(
        socket=socket,
        config=config_file,
        config_origin=source.name.lower() if source else "default",
        timeout=timeout,
        autostart=autostart_default() and not no_autostart,
    )


def exit_code(error: HotswapError) -> int:
    if isinstance(error, DaemonNotRunning):
        return EXIT_NOT_RUNNING
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, Busy):
        return EXIT_BUSY
    return EXIT_ERROR


def run() -> None:
    """Console-script entry point: every HotswapError becomes one line on stderr."""
    try:
        app()
    except HotswapError as error:
        sys.stderr.write(f"hs: error: {error.message}\n")
        sys.exit(exit_code(error))
    except BrokenPipeError:
        # `hs encode ... | head`: the reader left; say nothing, like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
