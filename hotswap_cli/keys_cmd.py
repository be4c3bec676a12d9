"""``hs keys``: the CURVE keys that secure TCP endpoints (see hotswapd.host.curve_keys)."""

from __future__ import annotations

from typing import Annotated

import typer

from hotswap_cli.output import print_json, print_table

app = typer.Typer(help="CURVE keys for TCP endpoints: the daemon's, yours, and the clients allowed in.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("init")
def init(as_json: JsonFlag = False) -> None:
    """Create the daemon's and your key pairs (if missing) and allow your key in as `local`.

    Example: hs keys init
    """
    from hotswapd.host.curve_keys import init_keys, keys_dir

    public = init_keys()
    if as_json:
        print_json({"dir": str(keys_dir()), **public})
        return
    typer.echo(f"keys in {keys_dir()}")
    typer.echo(f"daemon public key: {public['server']}")
    typer.echo(f"your public key:   {public['client']}  (authorised as 'local')")


@app.command("add", context_settings={"allow_interspersed_args": False})  # after NAME, a Z85 key beginning with "-" is the key
def add(
    name: Annotated[str, typer.Argument(help="A name for the client (recorded in the audit log).", metavar="NAME")],
    public_key: Annotated[str, typer.Argument(help="The client's public key: 40 Z85 characters.", metavar="PUBLIC_KEY")],
) -> None:
    """Allow a client in by its public key; takes effect at its next connection.

    Example: hs keys add laptop 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'
    """
    from hotswapd.host.curve_keys import add_key

    typer.echo(f"authorised {name}: {add_key(name, public_key)}")


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The client's name.", metavar="NAME")]) -> None:
    """Stop letting a client in (from its next connection).

    Example: hs keys remove laptop
    """
    from hotswapd.errors import ConfigError
    from hotswapd.host.curve_keys import remove_key

    if not remove_key(name):
        raise ConfigError(f"no authorised key named {name!r}")
    typer.echo(f"removed {name}")


@app.command("list")
def list_keys(as_json: JsonFlag = False) -> None:
    """The clients allowed in, with their public keys.

    Example: hs keys list
    """
    from hotswapd.host.curve_keys import authorized

    rows = [[name, key.decode()] for name, key in authorized().items()]
    if as_json:
        print_json([{"name": name, "public_key": key} for name, key in rows])
        return
    print_table("authorised keys", ["name", "public key"], rows, empty="no client keys are authorised (hs keys init, hs keys add NAME KEY)")
