"""``hs doctor``: check the installation and explain, one line each with a fix.

The checks live in doctor_checks (socket, directories, unit), doctor_config (config and
sources) and doctor_platform (backend libraries, CPU); they are imported inside the
command, so `hs` start-up pays nothing for them. Doctor never starts a daemon.
"""


from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from hotswap_cli.doctor_checks import Check
    from hotswap_cli.shared_options import Settings


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of {check, status, detail, fix}.")] = False,
) -> None:
    """Check the socket, config, sources, backends, directories, systemd unit and CPU.

    Exit status 1 when any check fails.

    Example: hs doctor --json
    """
    rows = run_checks(ctx.obj)
    if as_json:
        from dataclasses import asdict

        from hotswap_cli.output import print_json

        print_json([asdict(row) for row in rows])
    else:
        import shutil

        from hotswap_cli.output import stdout_is_terminal

        width = shutil.get_terminal_size().columns if stdout_is_terminal() else 0  # COLUMNS wins, as for the tables
        for row in rows:
            typer.echo(row.wrapped(width) if width else row.line())
    raise typer.Exit(1 if any(row.status == "fail" for row in rows) else 0)


def run_checks(settings: "Settings") -> "list[Check]":
    from hotswap_cli import doctor_checks, doctor_config, doctor_platform

    rows = _guarded("socket", lambda: doctor_checks.socket_checks(settings))
    config_row, config = doctor_config.config_check(settings)
    rows.append(config_row)
    used: set[str] | None = None
    if config is not None:
        loaded = config  # a name the lambda can close over, known not to be None
        rows += _guarded("source", lambda: doctor_config.source_checks(loaded))
        rows += _guarded("http keys", lambda: [check] if (check := doctor_config.http_keys_check(loaded)) else [])
        used = {version.backend for model in config.models.values() for version in model.versions.values()}
    rows += _guarded("backend", lambda: doctor_platform.backend_checks(used))
    rows += _guarded("dir", lambda: doctor_checks.dir_checks(settings))
    rows += _guarded("unit", lambda: doctor_checks.unit_checks(settings))
    rows += _guarded("cpu", lambda: [doctor_platform.cpu_check()])
    return rows


def _guarded(name: str, run: "Callable[[], list[Check]]") -> "list[Check]":
    """One check's rows; an error it did not expect becomes its fail line, so the other
    checks still report (a doctor that stops at the first problem is of little use)."""
    from hotswapd.errors import HotswapError

    from hotswap_cli.doctor_checks import Check

    try:
        return run()
    except HotswapError as exc:
        return [Check(name, "fail", exc.message, _FIXES.get(name))]
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return [Check(name, "fail", f"{where}{exc.strerror or exc}", _FIXES.get(name))]


_FIXES = {
    "socket": "check --socket / HOTSWAPD_SOCKET (ipc://PATH, tcp://127.0.0.1:PORT or a path)",
    "unit": "see `hs daemon unit`",
}
