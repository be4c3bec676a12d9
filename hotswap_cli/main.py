"""The ``hs`` app: global options, command registration, and the one error handler.

Start-up time matters here (``hs encode "x"`` in a shell loop): this package imports the
client and protocol layer only, and rich only when it draws something. A run registers
only the command it was asked for, so ``hs encode`` imports no other command's module
(``bench`` alone imported statistics, pickle and the bench history: 7.6 ms); ``hs --help``,
a mistyped command and :data:`app` (completions, tests) get every command. The command
modules deliberately do *not* use ``from __future__ import annotations``: Typer would then
eval every annotation string on every start, which cost 11 ms of a ~50 ms budget (measured).
"""


import importlib
import os
import sys
from typing import Annotated, Any

import typer

from hotswapd.client.connection import DEFAULT_TIMEOUT
from hotswapd.errors import Busy, ConfigError, DaemonNotRunning, HotswapError

from hotswap_cli.arguments import USAGE_ERRORS, finite, hoist_global_options, fill_optional_values
from hotswap_cli.shared_options import Settings, autostart_default, close_clients

# Every command, in the order `hs --help` lists them: its name, then the module and the
# attribute that define it (a function, or a Typer app for a group of subcommands).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("encode", "encode", "encode"),
    ("models", "models", "models"),
    ("preload", "models", "preload"),
    ("evict", "models", "evict"),
    ("status", "models", "status"),
    ("switch", "switch_cmd", "switch"),
    ("rollback", "switch_cmd", "rollback"),
    ("history", "switch_cmd", "history"),
    ("search", "search", "search"),
    ("rerank", "rerank_cmd", "rerank"),
    ("tokens", "tokens_cmd", "tokens"),
    ("compare", "compare", "compare"),
    ("bench", "bench_cmd", "bench"),
    ("metrics", "models", "metrics"),
    ("tune", "tune", "tune"),
    ("doctor", "doctor", "doctor"),
    ("daemon", "daemon", "app"),
    ("config", "config_cmd", "app"),
    ("keys", "keys_cmd", "app"),
    ("index", "index", "app"),
    ("fleet", "fleet_cmd", "app"),
)
# Options of `hs` itself that take a value: the command is the first word after them.
_VALUED_OPTIONS = {"--socket", "--config", "--timeout"}

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3  # as `systemctl status` and LSB init scripts do (hotswap_cli.daemon says so too)
EXIT_BUSY = 75  # sysexits EX_TEMPFAIL: the daemon's queue is full; retrying later will work


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"hs {version('hotswap')}")
        except PackageNotFoundError:
            typer.echo("hs (version unknown: not installed as a package)")
        raise typer.Exit()


def main(
    ctx: typer.Context,
    socket: Annotated[str | None, typer.Option(help="Daemon endpoint: ipc://PATH, tcp://127.0.0.1:PORT or a path.", envvar="HOTSWAPD_SOCKET", show_envvar=True)] = None,
    config_file: Annotated[str | None, typer.Option("--config", help="Config file for a daemon this command starts.", envvar="HOTSWAPD_CONFIG", show_envvar=True)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the daemon's answer (each request's deadline).", min=0.001, max=86400, callback=finite,
                                           envvar="HOTSWAPD_TIMEOUT", show_envvar=True)] = DEFAULT_TIMEOUT,
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


def build_app(only: str | None = None) -> typer.Typer:
    """The ``hs`` Typer app with every command, or with ``only`` that one."""
    built = typer.Typer(
        name="hs",
        help="Talk to hotswapd: embed texts, manage models, run the daemon.",
        no_args_is_help=True,
        add_completion=False,  # one completion story: the static scripts in completions/ (docs/operations.md)
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(main)
    for name, module, attribute in COMMANDS:
        if only is not None and name != only:
            continue
        defined = getattr(importlib.import_module(f"hotswap_cli.{module}"), attribute)
        if isinstance(defined, typer.Typer):
            built.add_typer(defined, name=name)
        else:
            built.command(name=name)(defined)
    return built


def command_named(argv: list[str]) -> str | None:
    """The command ``argv`` asks for, if it is one of ``hs``'s (None: help, or a mistake,
    which the full app answers)."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return None
        if word.startswith("-"):
            index += 2 if word in _VALUED_OPTIONS else 1
            continue
        return word if any(word == name for name, _, _ in COMMANDS) else None
    return None


def __getattr__(name: str) -> Any:
    """``app``, every command registered: for completions and tests, built when asked for."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    given = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(build_app(command_named(given)))
    try:
        args = hoist_global_options(command, fill_optional_values(given))
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
