"""``hs daemon run | start | stop | status | unit``."""


import os
import shutil
import sys
from enum import Enum
from typing import Annotated

import typer

from hotswapd.client.connection import Client
from hotswapd.errors import ConfigError, DaemonNotRunning, HotswapError
from hotswapd.host.lockfile import holder_pid
from hotswapd.host.paths import lock_path

from hotswap_cli.models import show_status
from hotswap_cli.output import print_json
from hotswap_cli.shared_options import Settings

class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


app = typer.Typer(help="Run, start, stop and install the daemon.", no_args_is_help=True)
EXIT_NOT_RUNNING = 3  # as `systemctl status` and LSB init scripts do


def _daemon_args(settings: Settings) -> list[str]:
    args = []
    if settings.socket:
        args += ["--socket", settings.socket]
    if settings.config:
        args += ["--config", settings.config]
    return args


@app.command()
def run(
    ctx: typer.Context,
    log_level: Annotated[LogLevel | None, typer.Option(help="Overrides daemon.log_level.")] = None,
) -> None:
    """Run the daemon in the foreground (what systemd runs).

    Example: hs daemon run --log-level debug
    """
    args = [sys.executable, "-m", "hotswapd", *_daemon_args(ctx.obj)]
    if log_level:
        args += ["--log-level", log_level.value]
    # Replace this process, so signals from the terminal or systemd reach the daemon itself.
    os.execv(sys.executable, args)


@app.command()
def start(
    ctx: typer.Context,
    http: Annotated[str | None, typer.Option("--http", metavar="HOST:PORT", help="Also serve the OpenAI-compatible HTTP endpoint there (overrides http.listen).")] = None,
) -> None:
    """Start a detached daemon and return once it answers.

    Example: hs --config ~/hotswap.toml daemon start --http 127.0.0.1:8080
    """
    settings: Settings = ctx.obj
    endpoint = settings.endpoint
    pid = holder_pid(lock_path(endpoint))
    if pid is not None:
        if http:
            _refuse_http_on_a_running_daemon(settings, pid, http)
        typer.echo(f"hotswapd is already running (pid {pid}) on {endpoint}")
        if settings.config_named:
            try:
                with Client(settings.socket, timeout=settings.timeout) as client:
                    settings.warn_if_other_config(client.status().get("config_path"))
            except HotswapError:
                pass  # it is starting or stopping: nothing to compare yet
        return
    from hotswapd.client.launcher import start_daemon  # subprocess: only for this command

    pid = start_daemon(endpoint, settings.config, http=http)
    typer.echo(f"started hotswapd (pid {pid}) on {endpoint}")
    if http:
        with Client(settings.socket, timeout=settings.timeout) as client:
            typer.echo(f"OpenAI-compatible endpoint: {client.status().get('http')}/v1")


def _refuse_http_on_a_running_daemon(settings: Settings, pid: int, http: str) -> None:
    """``--http`` applies when a daemon starts: against one already running it was dropped
    without a word (issue 29). Fine if it already serves there; else an error that says how."""
    serving = None
    try:
        with Client(settings.socket, timeout=settings.timeout) as client:
            serving = client.status().get("http")
    except HotswapError:
        pass  # starting or stopping: what it serves cannot be told
    if isinstance(serving, str) and serving.removeprefix("http://").rstrip("/") == http.removeprefix("http://").rstrip("/"):
        return
    now = f"serves HTTP on {serving}" if serving else "serves no HTTP endpoint"
    raise ConfigError(
        f"hotswapd is already running (pid {pid}) and {now}; --http {http} applies when it starts: "
        "run `hs daemon stop` first, or set [http] listen in its config and restart it"
    )


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the daemon after the requests in flight finish.

    Example: hs daemon stop
    """
    from hotswapd.client.launcher import stop_daemon

    endpoint = ctx.obj.endpoint
    pid = stop_daemon(endpoint)
    typer.echo(f"stopped hotswapd (pid {pid})" if pid else f"hotswapd is not running on {endpoint}")


@app.command("status")
def daemon_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Is the daemon running? Exit status 3 when it is not.

    Example: hs daemon status --json
    """
    settings: Settings = ctx.obj
    try:
        info = Client(settings.socket, timeout=settings.timeout).status()
    except DaemonNotRunning as exc:
        if as_json:
            print_json({"running": False, "socket": settings.endpoint})
        else:
            typer.echo(exc.message)
        raise typer.Exit(EXIT_NOT_RUNNING) from None
    settings.warn_if_other_config(info.get("config_path"))
    if as_json:
        print_json({"running": True, **info})
    else:
        show_status(info)


def _hotswapd_executable() -> list[str]:
    """The daemon of the installation this `hs` runs from, as absolute words for ExecStart."""
    sibling = os.path.join(os.path.dirname(sys.executable), "hotswapd")
    if os.access(sibling, os.X_OK):  # the console script beside this interpreter: same version
        return [sibling]
    found = shutil.which("hotswapd")
    return [os.path.abspath(found)] if found else [sys.executable, "-m", "hotswapd"]


def current_unit(settings: Settings) -> str:
    """The unit `hs daemon unit` writes for these settings (hs doctor compares it too)."""
    from hotswapd.host.systemd import unit_spec, unit_text

    return unit_text(unit_spec(_hotswapd_executable(), settings.socket, settings.config))


@app.command()
def unit(
    ctx: typer.Context,
    install: Annotated[bool, typer.Option("--install", help="Write it to the user's systemd directory.")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --install: replace an installed unit that differs.")] = False,
) -> None:
    """Print a hardened systemd user unit for the daemon (Type=notify), or install it.

    Example: hs --config ~/hotswap.toml daemon unit --install
    """
    from hotswapd.host.systemd import install_unit, user_unit_path

    text = current_unit(ctx.obj)
    if not install:
        typer.echo(text, nl=False)
        return
    target = user_unit_path()
    link = os.readlink(target) if target.is_symlink() else None
    outcome = install_unit(text, force=force, target=target)
    if link is not None and outcome != "unchanged":
        typer.echo(f"note: {target} was a symbolic link to {link}; it is now a regular file (the link's target is untouched)", err=True)
    if outcome == "unchanged":
        typer.echo(f"{target} is already installed with this content")
    elif outcome == "replaced":
        typer.echo(f"replaced {target}\nnext: systemctl --user daemon-reload && systemctl --user restart hotswapd")
    else:
        typer.echo(f"wrote {target}\nnext: systemctl --user daemon-reload && systemctl --user enable --now hotswapd")
