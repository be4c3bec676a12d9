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

from hotswapd.client.connection import DEFAULT_TIMEOUT
from hotswapd.errors import Busy, ConfigError, DaemonNotRunning, HotswapError

from hotswap_cli import bench_cmd, compare, config_cmd, daemon, doctor, encode, index, keys_cmd, models, search, switch_cmd, tune
from hotswap_cli.arguments import USAGE_ERRORS, finite, hoist_global_options, fill_optional_values
from hotswap_cli.shared_options import Settings, autostart_default, close_clients

app = typer.Typer(
    name="hs",
    help="Talk to hotswapd: embed texts, manage models, run the daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(encode.encode)
app.command()(models.models)
app.command()(models.preload)
app.command()(models.evict)
app.command()(models.status)
app.command()(switch_cmd.switch)
app.command()(switch_cmd.rollback)
app.command()(switch_cmd.history)
app.command()(search.search)
app.command()(compare.compare)
app.command()(bench_cmd.bench)
app.command()(models.metrics)
app.command()(tune.tune)
app.command()(doctor.doctor)
app.add_typer(daemon.app, name="daemon")
app.add_typer(config_cmd.app, name="config")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(index.app, name="index")

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = daemon.EXIT_NOT_RUNNING
EXIT_BUSY = 75  # sysexits EX_TEMPFAIL: the daemon's queue is full; retrying later will work


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"hs {version('hotswap')}")
        except PackageNotFoundError:
            typer.echo("hs (version unknown: not installed as a package)")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    socket: Annotated[str | None, typer.Option(help="Daemon endpoint: ipc://PATH, tcp://127.0.0.1:PORT or a path.", envvar="HOTSWAPD_SOCKET", show_envvar=True)] = None,
    config_file: Annotated[str | None, typer.Option("--config", help="Config file for a daemon this command starts.", envvar="HOTSWAPD_CONFIG", show_envvar=True)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the daemon's answer.", min=0.001, max=86400, callback=finite)] = DEFAULT_TIMEOUT,
    no_autostart: Annotated[bool, typer.Option("--no-autostart", help="Fail instead of starting a daemon when none runs.", envvar="HOTSWAPD_NO_AUTOSTART", show_envvar=True)] = False,
    show_version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.", is_eager=True, callback=_print_version)] = False,
) -> None:
    """Global options may also follow the command: hs encode "x" --timeout 5."""
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


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error, usage errors included, is one line on stderr."""
    if sys.stdout is None or sys.stdin is None:  # started with `>&-` or `<&-`
        _closed_stream()
    command = typer.main.get_command(app)
    try:
        args = hoist_global_options(command, fill_optional_values(sys.argv[1:] if argv is None else argv))
        # Ctrl-C comes back from typer as exit code 130. Whatever the way out, the clients
        # are closed on it: what they still wait for is withdrawn (hotswapd drops it at once).
        try:
            code = command.main(args, prog_name="hs", standalone_mode=False)
        finally:
            close_clients()
    except USAGE_ERRORS as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `hs` or `hs daemon`: the help
            typer.echo(error.format_message())
            sys.exit(0)
        sys.stderr.write(f"hs: error: {_usage_message(error)}\n")
        sys.exit(EXIT_CONFIG)
    except typer.Abort:
        sys.exit(130)
    except HotswapError as error:
        sys.stderr.write(f"hs: error: {one_line(error.message)}\n")
        sys.exit(exit_code(error))
    except BrokenPipeError:
        # `hs encode ... | head`: the reader left; say nothing, like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _closed_stream() -> None:
    """A closed stdin reads as empty; a closed stdout cannot take results, and saying nothing
    would look like an empty answer."""
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115 -- lives as long as the process
    if sys.stdout is None:
        if sys.stderr is not None:
            sys.stderr.write("hs: error: stdout is closed; nothing could be written\n")
        sys.exit(EXIT_ERROR)


def one_line(message: str) -> str:
    """An error is one line: a newline or other control character inside it (a path, a
    remote error's body) is shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _usage_message(error: Exception) -> str:
    """click's message, with where to look, on one line."""
    message = " ".join(error.format_message().split())  # type: ignore[attr-defined]
    context = getattr(error, "ctx", None)
    where = f" (see: {context.command_path} --help)" if context is not None else ""
    return message + where
